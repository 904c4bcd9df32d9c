/**
 * Input images as the API takes them: base64 text (or a `data:` URL) of a PNG, JPEG or WebP,
 * inside the JSON of the submit.
 */

/** An image genqueue fetches itself: an https URL. */
export interface ImageUrl {
  url: string;
}

/**
 * An input image: a `Blob` (a `File` from an `<input type="file">`), bytes (`Uint8Array`,
 * any typed array or `DataView`, `ArrayBuffer`), a string that already is base64 (standard
 * or URL-safe) or a `data:` URL, or `{ url }` for genqueue to fetch; strings and URLs are sent as
 * they are.
 */
export type ImageInput = Blob | ArrayBuffer | ArrayBufferView | string | ImageUrl;

// Bytes per String.fromCharCode call: well under any engine's argument limit.
const CHUNK = 0x8000;

/** Standard base64 of `bytes`. */
export function base64Of(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

/** What the API takes for `image`: base64 text, or `{ url }`. */
export async function encodeImage(image: ImageInput): Promise<string | ImageUrl> {
  if (typeof image === "string") return image;
  if (typeof Blob !== "undefined" && image instanceof Blob) {
    return base64Of(new Uint8Array(await image.arrayBuffer()));
  }
  if (ArrayBuffer.isView(image)) {
    return base64Of(new Uint8Array(image.buffer, image.byteOffset, image.byteLength));
  }
  if (image instanceof ArrayBuffer) return base64Of(new Uint8Array(image));
  if (typeof image === "object" && "url" in image && typeof image.url === "string") return { url: image.url };
  throw new TypeError("an image must be a Blob, bytes (Uint8Array, ArrayBuffer), a base64 string or { url }");
}
