import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { createTempFile, type TempFile } from './temp-file.js';

/**
 * The recording files: `recordings/<namespace>/<callId>.mp3` under the cache
 * directory, each written first as a {@link TempFile} under `tmp/`, fsynced,
 * then renamed into place, so a file under `recordings/` is always whole.
 */
export interface DiskStore {
  readonly dir: string;
  /** Creates the folders and removes temporary files that crashed processes left behind. */
  init(): Promise<void>;
  pathFor(namespace: string, callId: string): string;
  /** A new temporary file in this process's `tmp/` folder; it commits itself to `pathFor(...)`. */
  createTemp(): Promise<TempFile>;
  /** Opens a stored recording for reading; undefined when it is not there. */
  openRecording(namespace: string, callId: string): Promise<FileHandle | undefined>;
  remove(namespace: string, callId: string): Promise<void>;
}

const RECORDINGS = 'recordings';
const TEMP = 'tmp';
// A temp folder of another host's process cannot be checked for life: it is
// taken as abandoned once it has not changed for this long.
const FOREIGN_TEMP_MAX_AGE_MS = 60 * 60_000;

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Each process writes under `tmp/<host>-<pid>-<random>/`, so replicas sharing
 * a cache directory never remove each other's downloads in progress. A folder
 * is leftover when its process on this host is gone, or (another host's) when
 * it has been idle for an hour; loose files are from older versions.
 */
async function removeLeftoverTemp(tempDir: string, own: string): Promise<void> {
  const host = hostname();
  for (const name of await readdir(tempDir).catch(() => [] as string[])) {
    if (name === own) continue;
    const match = /^(.+)-(\d+)-[0-9a-f]+$/.exec(name);
    const full = path.join(tempDir, name);
    let abandoned = !match;
    if (match && match[1] === host) abandoned = !processIsAlive(Number(match[2]));
    else if (match)
      abandoned =
        Date.now() -
          (await stat(full).then(
            (info) => info.mtimeMs,
            () => 0,
          )) >
        FOREIGN_TEMP_MAX_AGE_MS;
    if (abandoned) await rm(full, { recursive: true, force: true });
  }
}

export function createDiskStore(dir: string): DiskStore {
  const recordingsDir = path.join(dir, RECORDINGS);
  const ownTemp = `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tempDir = path.join(dir, TEMP, ownTemp);
  const pathFor = (namespace: string, callId: string) => path.join(recordingsDir, namespace, `${callId}.mp3`);

  return {
    dir,
    pathFor,
    async init() {
      await mkdir(recordingsDir, { recursive: true });
      await mkdir(tempDir, { recursive: true });
      await removeLeftoverTemp(path.dirname(tempDir), ownTemp);
    },
    async createTemp() {
      try {
        return await createTempFile(tempDir);
      } catch (error) {
        // The folder went away (an operator cleaned up, a volume was remounted): recreate it once.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        await mkdir(tempDir, { recursive: true });
        return createTempFile(tempDir);
      }
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
  };
}

/** Lists `{namespace, callId}` of every file under recordings/ (for reconciliation); `pathFor` gives each path. */
export async function listStoredFiles(dir: string): Promise<Array<{ namespace: string; callId: string }>> {
  const recordingsDir = path.join(dir, RECORDINGS);
  const namespaces = await readdir(recordingsDir).catch(() => [] as string[]);
  const files: Array<{ namespace: string; callId: string }> = [];
  for (const namespace of namespaces) {
    for (const name of await readdir(path.join(recordingsDir, namespace)).catch(() => [] as string[])) {
      if (name.endsWith('.mp3')) files.push({ namespace, callId: name.slice(0, -4) });
    }
  }
  return files;
}
