import type { MPEGDecoder } from 'mpg123-decoder';

/**
 * What this module touches of mpg123-decoder 1.0.3 beyond its typed API: the
 * static hook it has for web workers (a replacement for its WebAssembly
 * helper class) and a decoder's reference to its WebAssembly instance.
 */
type DecoderClass = typeof MPEGDecoder & { WASMAudioDecoderCommon?: unknown };
interface DecoderInternals {
  _common?: { _wasm?: unknown };
}
type EmscriptenModule = new (common: unknown) => unknown;

let loading: Promise<typeof MPEGDecoder> | undefined;

/**
 * mpg123-decoder (mpg123 in WebAssembly), imported the first time a recording
 * is decoded, so a gateway that never decodes does not carry it.
 */
export function loadMpegDecoder(): Promise<typeof MPEGDecoder> {
  loading ??= import('mpg123-decoder').then(({ MPEGDecoder }) => {
    claimFirstInstance(MPEGDecoder);
    return MPEGDecoder;
  });
  return loading;
}

/**
 * Frees a decoder and lets go of its WebAssembly instance, so its memory
 * (about 17 MB) is returned once the decoder is unreachable.
 */
export function freeMpegDecoder(decoder: MPEGDecoder): void {
  decoder.free();
  // The helper's static functions close over the first helper ever made, and
  // through it its instance: without this, the first decoder's memory stays.
  const internals = decoder as unknown as DecoderInternals;
  if (internals._common) internals._common._wasm = undefined;
}

/**
 * The library defines a getter on its Emscripten module inside the first
 * module instance's scope, whose closure keeps that instance's WebAssembly
 * memory for the life of the process. A throwaway first instance, which never
 * instantiates WebAssembly, takes that role: made through the web-worker hook,
 * with a helper that only constructs the module.
 */
function claimFirstInstance(decoderClass: DecoderClass): void {
  decoderClass.WASMAudioDecoderCommon = function ThrowawayHelper(this: { instantiate: unknown }) {
    this.instantiate = (emscripten: EmscriptenModule) => {
      new emscripten(undefined);
      return new Promise<never>(() => {});
    };
  };
  try {
    new decoderClass();
  } finally {
    delete decoderClass.WASMAudioDecoderCommon;
  }
}
