import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PRIVATE_FILE_MODE } from '../private-files.js';

const VOLUME_ID_FILE = 'volume-id';
const VOLUME_ID = /^[0-9a-f-]{36}$/;

/**
 * The cache directory's identity: an id written on first start. Replicas that
 * share a volume read the same id, so the cluster knows which copies each can
 * open and which it must ask another replica for.
 */
export async function readOrCreateVolumeId(cacheDir: string): Promise<string> {
  const file = path.join(cacheDir, VOLUME_ID_FILE);
  const existing = await readVolumeId(file);
  if (existing) return existing;
  try {
    // 'wx': of two replicas starting together on a new volume, one writes and both read its id.
    await writeFile(file, `${randomUUID()}\n`, { flag: 'wx', mode: PRIVATE_FILE_MODE });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  // The other replica's write may still be under way: give it a moment.
  for (let attempt = 0; attempt < 20; attempt++) {
    const id = await readVolumeId(file);
    if (id) return id;
    await sleep(50);
  }
  throw new Error(`cache directory: ${VOLUME_ID_FILE} is not a volume id; remove it to let the gateway write a new one`);
}

async function readVolumeId(file: string): Promise<string | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined);
  const id = text?.trim();
  return id && VOLUME_ID.test(id) ? id : undefined;
}
