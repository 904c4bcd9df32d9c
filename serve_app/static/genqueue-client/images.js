/**
 * Input images as the API takes them: base64 text (or a `data:` URL) of a PNG, JPEG or WebP,
 * inside the JSON of the submit.
 */
// Bytes per String.fromCharCode call: well under any engine's argument limit.
const CHUNK = 0x8000;
/** Standard base64 of `bytes`. */
export function base64Of(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += CHUNK) {
        binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
    }
    return btoa(binary);
}
/** What the API takes for `image`: base64 text, or `{ url }`. */
export async function encodeImage(image) {
    if (typeof image === "string")
        return image;
    if (typeof Blob !== "undefined" && image instanceof Blob) {
        return base64Of(new Uint8Array(await image.arrayBuffer()));
    }
    if (ArrayBuffer.isView(image)) {
        return base64Of(new Uint8Array(image.buffer, image.byteOffset, image.byteLength));
    }
    if (image instanceof ArrayBuffer)
        return base64Of(new Uint8Array(image));
    if (typeof image === "object" && "url" in image && typeof image.url === "string")
        return { url: image.url };
    throw new TypeError("an image must be a Blob, bytes (Uint8Array, ArrayBuffer), a base64 string or { url }");
}
