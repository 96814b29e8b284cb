import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import type { CacheEncryptionConfig } from '../config/index.js';
import { closeToOthers, makePrivateDir } from '../private-files.js';
import { decryptBuffer, encryptBuffer, openEncryptedFile } from './encryption/encrypted-file.js';
import { createEncryptedTempFile } from './encryption/encrypted-temp-file.js';
import { createKeyring } from './encryption/keyring.js';
import { openPlainFile, type StoredFile } from './stored-file.js';
import { createTempFile, writeFileDurably, type TempFile } from './temp-file.js';

/**
 * The recording files: `recordings/<namespace>/<callId>.mp3` under the cache
 * directory, each written first as a {@link TempFile} under `tmp/`, fsynced,
 * then renamed into place, so a file under `recordings/` is always whole.
 * With `cache.encryption` every file, temporary ones included, is encrypted
 * (encryption/chunk-format.ts) and read back through a decrypting {@link StoredFile}.
 */
export interface DiskStore {
  readonly dir: string;
  /** True with `cache.encryption`: every recording is stored encrypted, and decrypted as it is read. */
  readonly encrypted: boolean;
  /**
   * Creates the folders (closed to other users: files are created so too),
   * closes those an older version made to others, and removes temporary files
   * that crashed processes left behind.
   */
  init(): Promise<void>;
  pathFor(namespace: string, callId: string): string;
  /** A new temporary file in this process's `tmp/` folder; it commits itself to `pathFor(...)`. */
  createTemp(): Promise<TempFile>;
  /**
   * Removes this process's `tmp/` folder if it is empty, as a graceful stop
   * leaves it; one still holding a file is left to the next start's sweep
   * (`init`). A later `createTemp` makes it again.
   */
  removeOwnTemp(): Promise<void>;
  /**
   * Opens a stored recording for reading (decrypting it with `cache.encryption`); undefined when it is not there.
   * @throws DamagedFileError when an encrypted file has no header, an unknown key or an impossible size.
   */
  openRecording(namespace: string, callId: string): Promise<StoredFile | undefined>;
  /**
   * Whether a recording's file is there, asked synchronously: a stat the
   * kernel answers from its directory cache, cheaper than any round trip to
   * the thread pool (the index lookup on a miss uses it).
   */
  hasRecording(namespace: string, callId: string): boolean;
  /** Removes a recording and its sidecars (the sidecars first, so a crash never leaves one without its recording). */
  remove(namespace: string, callId: string): Promise<void>;
  /**
   * Stores a recording's sidecar whole (`sidecars/<namespace>/<callId>.<kind>`,
   * e.g. its waveform peaks): a temporary file in that folder, fsynced, renamed into place.
   */
  writeSidecar(namespace: string, callId: string, kind: SidecarKind, bytes: Uint8Array): Promise<void>;
  /**
   * A sidecar's bytes, as written; undefined when there is none.
   * @throws DamagedFileError with `cache.encryption`, when it fails decryption.
   */
  readSidecar(namespace: string, callId: string, kind: SidecarKind): Promise<Buffer | undefined>;
}

/**
 * What is kept with a recording, as `sidecars/<namespace>/<callId>.<kind>`
 * on the same volume; each goes with its recording. A folder of their own
 * keeps `recordings/` holding recordings only.
 */
export const SIDECAR_KINDS = ['peaks'] as const;
export type SidecarKind = (typeof SIDECAR_KINDS)[number];

const RECORDINGS = 'recordings';
const SIDECARS = 'sidecars';
const TEMP = 'tmp';
// A temp folder of another host's process cannot be checked for life: it is
// taken as abandoned once neither it nor a file in it has changed for this long.
const FOREIGN_TEMP_MAX_AGE_MS = 60 * 60_000;

/**
 * When a temp folder last changed: the folder's own time moves only when a
 * file comes or goes, a file's with every write to it, so a download written
 * for longer than the folder is old still counts as changing. 0 when gone.
 */
async function lastChangedAt(folder: string): Promise<number> {
  const files = await readdir(folder).catch(() => [] as string[]);
  const times = await Promise.all([folder, ...files.map((file) => path.join(folder, file))].map(changedAt));
  return Math.max(...times);
}

/** A file's or folder's own modification time; 0 when gone. */
function changedAt(file: string): Promise<number> {
  return stat(file).then(
    (info) => info.mtimeMs,
    () => 0,
  );
}

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
 * neither it nor a file in it has changed for an hour; loose files are from
 * older versions. One with this process's own host and pid that is not its
 * own, last changed before this process started, is an earlier process's that
 * had the same pid: in a container the gateway is PID 1 after every restart.
 */
async function removeLeftoverTemp(tempDir: string, own: string): Promise<void> {
  const host = hostname();
  const startedAt = Date.now() - process.uptime() * 1000;
  for (const name of await readdir(tempDir).catch(() => [] as string[])) {
    if (name === own) continue;
    const match = /^(.+)-(\d+)-[0-9a-f]+$/.exec(name);
    const full = path.join(tempDir, name);
    let abandoned = !match;
    if (match && match[1] === host) {
      const pid = Number(match[2]);
      abandoned = pid === process.pid ? (await changedAt(full)) < startedAt : !processIsAlive(pid);
    } else if (match) abandoned = Date.now() - (await lastChangedAt(full)) > FOREIGN_TEMP_MAX_AGE_MS;
    if (abandoned) await rm(full, { recursive: true, force: true });
  }
}

/**
 * Older versions made the folders 0755 under umask 022, and their files 0644:
 * taking others' bits off `recordings/`, `sidecars/`, `tmp/` and the
 * namespace folders (a few, one per Flyflow account) keeps others out of the
 * files inside without visiting each of them, which start-up cannot afford.
 * The cache directory itself is the operator's, and left as it is.
 */
async function closeOlderFolders(dir: string): Promise<void> {
  for (const folder of [RECORDINGS, SIDECARS, TEMP]) {
    const full = path.join(dir, folder);
    closeToOthers(full);
    if (folder === TEMP) continue;
    for (const namespace of await readdir(full).catch(() => [] as string[])) closeToOthers(path.join(full, namespace));
  }
}

export interface DiskStoreOptions {
  /** `cache.encryption`: files are written encrypted with its key and read with it or a previous one; absent: in the clear. */
  encryption?: CacheEncryptionConfig | undefined;
  /** Told once per key id of files encrypted under a key not configured (the id only, never a key). */
  onUnknownKey?: (keyIdHex: string) => void;
}

export function createDiskStore(dir: string, options: DiskStoreOptions = {}): DiskStore {
  const keyring = options.encryption && createKeyring(options.encryption, options.onUnknownKey);
  const recordingsDir = path.join(dir, RECORDINGS);
  const ownTemp = `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tempDir = path.join(dir, TEMP, ownTemp);
  const pathFor = (namespace: string, callId: string) => path.join(recordingsDir, namespace, `${callId}.mp3`);
  const sidecarPathFor = (namespace: string, callId: string, kind: SidecarKind) => sidecarPath(dir, namespace, callId, kind);

  return {
    dir,
    encrypted: keyring !== undefined,
    pathFor,
    async init() {
      await makePrivateDir(recordingsDir);
      await makePrivateDir(tempDir);
      await closeOlderFolders(dir);
      await removeLeftoverTemp(path.dirname(tempDir), ownTemp);
    },
    async createTemp() {
      let file: TempFile;
      try {
        file = await createTempFile(tempDir);
      } catch (error) {
        // The folder went away (an operator cleaned up, a volume was remounted): recreate it once.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        await makePrivateDir(tempDir);
        file = await createTempFile(tempDir);
      }
      return keyring ? createEncryptedTempFile(file, keyring.current) : file;
    },
    async removeOwnTemp() {
      try {
        await rmdir(tempDir);
      } catch (error) {
        // Gone already, or not empty (a download's file that could not be removed): the next start's sweep takes it.
        if (!['ENOENT', 'ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      }
    },
    hasRecording(namespace, callId) {
      return existsSync(pathFor(namespace, callId));
    },
    async openRecording(namespace, callId) {
      let handle: FileHandle;
      try {
        handle = await open(pathFor(namespace, callId), 'r');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw error;
      }
      try {
        return await (keyring ? openEncryptedFile(handle, keyring) : openPlainFile(handle));
      } catch (error) {
        await handle.close().catch(() => {});
        throw error;
      }
    },
    async remove(namespace, callId) {
      await Promise.all(SIDECAR_KINDS.map((kind) => removeFile(sidecarPathFor(namespace, callId, kind))));
      await removeFile(pathFor(namespace, callId));
    },
    async writeSidecar(namespace, callId, kind, bytes) {
      // A plain temporary file: the sidecar's bytes are written as given (encrypted whole with `cache.encryption`).
      const content = keyring ? encryptBuffer(bytes, keyring.current) : bytes;
      // Written in its own folder rather than tmp/, whose files are downloads in progress.
      const finalPath = sidecarPathFor(namespace, callId, kind);
      await makePrivateDir(path.dirname(finalPath));
      await writeFileDurably(finalPath, content);
    },
    async readSidecar(namespace, callId, kind) {
      try {
        const content = await readFile(sidecarPathFor(namespace, callId, kind));
        return keyring ? decryptBuffer(content, keyring) : content;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw error;
      }
    },
  };
}

/**
 * File removals a bulk job (start-up's reconciliation, a local purge) keeps
 * under way at once: each is a round trip to a thread that costs more waiting
 * than work. One at a time, 1,000 dropped entries and 1,000 orphans took 0.9 s
 * of a 100,000-entry start-up.
 */
export const FILE_REMOVALS_AT_ONCE = 16;

/**
 * Deletes a cache file, if there. Not `rm(file, { force: true })`: an unlink
 * refused with EPERM (an immutable file) makes it try the file as a folder,
 * and it reports ENOTDIR from scandir instead of what went wrong.
 */
export async function removeFile(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Where a recording's sidecar of `kind` lives. */
export function sidecarPath(dir: string, namespace: string, callId: string, kind: SidecarKind): string {
  return path.join(dir, SIDECARS, namespace, `${callId}.${kind}`);
}

/** Lists `{namespace, callId}` of every file under recordings/ (for reconciliation); `pathFor` gives each path. */
export async function listStoredFiles(dir: string): Promise<Array<{ namespace: string; callId: string }>> {
  return (await listCacheFiles(dir)).recordings;
}

/**
 * Every recording file, every sidecar, and every other file under
 * `sidecars/` (a write a crash interrupted), for reconciliation.
 */
export async function listCacheFiles(dir: string): Promise<{
  recordings: Array<{ namespace: string; callId: string }>;
  sidecars: Array<{ namespace: string; callId: string; kind: SidecarKind }>;
  /** Absolute paths. */
  sidecarStrays: string[];
}> {
  const recordings: Array<{ namespace: string; callId: string }> = [];
  const sidecars: Array<{ namespace: string; callId: string; kind: SidecarKind }> = [];
  const sidecarStrays: string[] = [];
  for (const { namespace, name } of await listTree(path.join(dir, RECORDINGS))) {
    if (name.endsWith('.mp3')) recordings.push({ namespace, callId: name.slice(0, -4) });
  }
  for (const { namespace, name } of await listTree(path.join(dir, SIDECARS))) {
    const dot = name.indexOf('.');
    const kind = SIDECAR_KINDS.find((known) => known === name.slice(dot + 1));
    if (dot > 0 && kind) sidecars.push({ namespace, callId: name.slice(0, dot), kind });
    else sidecarStrays.push(path.join(dir, SIDECARS, namespace, name));
  }
  return { recordings, sidecars, sidecarStrays };
}

/** `<root>/<namespace>/<name>` for every file two levels down. */
async function listTree(root: string): Promise<Array<{ namespace: string; name: string }>> {
  const files: Array<{ namespace: string; name: string }> = [];
  for (const namespace of await readdir(root).catch(() => [] as string[])) {
    for (const name of await readdir(path.join(root, namespace)).catch(() => [] as string[])) files.push({ namespace, name });
  }
  return files;
}
