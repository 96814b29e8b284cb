/** A copy the index refused: a purge of the recording came after its download began, so it must not be kept. */
export class StaleCopyError extends Error {}
