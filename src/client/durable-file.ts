import { open } from 'node:fs/promises';

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
