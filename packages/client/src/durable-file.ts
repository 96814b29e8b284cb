import { open } from 'node:fs/promises';
import path from 'node:path';

/** Flushes a finished file to disk, so a crash after the rename never leaves an empty or short file. */
export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes the rename itself durable; some platforms cannot open a directory, which is fine. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (!handle) return;
  await handle.sync().catch(() => {});
  await handle.close().catch(() => {});
}

/**
 * Makes folders that `mkdir -p` just created durable: each one's entry lives in
 * its parent, so every parent from `dir` up to the one above `firstCreated` is flushed.
 */
export async function fsyncCreatedFolders(dir: string, firstCreated: string): Promise<void> {
  const stop = path.dirname(firstCreated);
  let folder = dir;
  while (folder !== stop && folder !== path.dirname(folder)) {
    folder = path.dirname(folder);
    await fsyncDirectory(folder);
  }
}
