import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/**
 * The recording files: `recordings/<namespace>/<callId>.mp3` under the cache
 * directory, each written first as `tmp/<random>.part`, fsynced, then renamed
 * into place, so a file under `recordings/` is always whole.
 */
export interface DiskStore {
  readonly dir: string;
  /** Creates the folders and removes temporary files a crash left behind. */
  init(): Promise<void>;
  pathFor(namespace: string, callId: string): string;
  /** A new temporary file, open for writing and reading. */
  createTemp(): Promise<{ path: string; handle: FileHandle }>;
  /** Moves a finished, fsynced temporary file into place and makes the rename durable. */
  commit(tempPath: string, namespace: string, callId: string): Promise<void>;
  /** Opens a stored recording for reading; undefined when it is not there. */
  openRecording(namespace: string, callId: string): Promise<FileHandle | undefined>;
  remove(namespace: string, callId: string): Promise<void>;
  discardTemp(tempPath: string): Promise<void>;
}

const RECORDINGS = 'recordings';
const TEMP = 'tmp';

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function createDiskStore(dir: string): DiskStore {
  const recordingsDir = path.join(dir, RECORDINGS);
  const tempDir = path.join(dir, TEMP);
  const pathFor = (namespace: string, callId: string) => path.join(recordingsDir, namespace, `${callId}.mp3`);

  return {
    dir,
    pathFor,
    async init() {
      await mkdir(recordingsDir, { recursive: true });
      await rm(tempDir, { recursive: true, force: true });
      await mkdir(tempDir, { recursive: true });
    },
    async createTemp() {
      const tempPath = path.join(tempDir, `${randomBytes(12).toString('hex')}.part`);
      return { path: tempPath, handle: await open(tempPath, 'wx+') };
    },
    async commit(tempPath, namespace, callId) {
      const finalPath = pathFor(namespace, callId);
      await mkdir(path.dirname(finalPath), { recursive: true });
      await rename(tempPath, finalPath);
      await fsyncDir(path.dirname(finalPath));
    },
    async openRecording(namespace, callId) {
      try {
        return await open(pathFor(namespace, callId), 'r');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw error;
      }
    },
    async remove(namespace, callId) {
      await rm(pathFor(namespace, callId), { force: true });
    },
    async discardTemp(tempPath) {
      await unlink(tempPath).catch(() => {});
    },
  };
}

/** Lists `[namespace, callId]` of every file under recordings/ (for reconciliation and `cache verify`). */
export async function listStoredFiles(dir: string): Promise<Array<{ namespace: string; callId: string; path: string }>> {
  const recordingsDir = path.join(dir, RECORDINGS);
  const namespaces = await readdir(recordingsDir).catch(() => [] as string[]);
  const files: Array<{ namespace: string; callId: string; path: string }> = [];
  for (const namespace of namespaces) {
    for (const name of await readdir(path.join(recordingsDir, namespace)).catch(() => [] as string[])) {
      if (name.endsWith('.mp3')) {
        files.push({ namespace, callId: name.slice(0, -4), path: path.join(recordingsDir, namespace, name) });
      }
    }
  }
  return files;
}
