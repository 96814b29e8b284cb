import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { request, type Agent, type IncomingMessage } from 'node:http';
import path from 'node:path';

/** A recording of `size` bytes that passes the gateway's MP3 check (an ID3 tag), random after that. */
export function syntheticRecording(size: number): Buffer {
  const bytes = randomBytes(size);
  bytes.write('ID3', 0, 'latin1');
  return bytes;
}

/** Every file under `<cacheDir>/recordings`, with its size. */
export async function storedRecordingFiles(cacheDir: string): Promise<Array<{ path: string; size: number }>> {
  const root = path.join(cacheDir, 'recordings');
  const found: Array<{ path: string; size: number }> = [];
  async function walk(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else {
        // A file evicted between the listing and the stat is simply not there any more.
        const size = await stat(full).then(
          (info) => info.size,
          () => undefined,
        );
        if (size !== undefined) found.push({ path: full, size });
      }
    }
  }
  await walk(root);
  return found;
}

/** A GET whose body the test reads at its own pace; `agent: false` unless one is given. */
export function openGet(url: string, headers: Record<string, string>, agent: Agent | false = false): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', headers, agent }, resolve);
    req.once('error', reject);
    req.end();
  });
}

/**
 * Reads a response body to its end, or to the point where the connection broke.
 * `complete` is true only when every byte of the message arrived.
 * `onData` sees the running total after each chunk.
 */
export function readBody(response: IncomingMessage, onData?: (received: number) => void): Promise<{ bytes: Buffer; complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const settle = (complete: boolean) => {
      if (settled) return;
      settled = true;
      resolve({ bytes: Buffer.concat(chunks), complete });
    };
    response.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      onData?.(received);
    });
    response.once('end', () => settle(response.complete));
    response.once('error', () => settle(false));
    response.once('close', () => settle(response.complete && response.readableEnded));
  });
}

/**
 * Sends a GET and hangs up, without waiting for any answer, once `asked`
 * says the request got where the test wants it (the upstream has it, say).
 */
export async function askThenLeave(url: string, headers: Record<string, string>, asked: () => Promise<boolean> | boolean): Promise<void> {
  const asking = request(url, { method: 'GET', headers, agent: false });
  asking.on('error', () => {});
  asking.end();
  await eventually(asked);
  asking.destroy();
}

/** Polls `check` every 25 ms until it returns true or `timeoutMs` passes; returns its last answer. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
