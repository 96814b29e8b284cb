import { open } from 'node:fs/promises';

/** Makes a rename in `dir` durable: the directory entry itself is fsynced. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
