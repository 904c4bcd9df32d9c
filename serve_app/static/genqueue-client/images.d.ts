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
/** Standard base64 of `bytes`. */
export declare function base64Of(bytes: Uint8Array): string;
/** What the API takes for `image`: base64 text, or `{ url }`. */
export declare function encodeImage(image: ImageInput): Promise<string | ImageUrl>;
