import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, test } from 'vitest';
import { bytesTaken, bytesWaiting, writeToHandle } from '../../src/http/handle-write.js';

const opened: Array<Server | Socket> = [];

afterEach(async () => {
  const things = opened.splice(0);
  for (const thing of things) if ('destroy' in thing) thing.destroy();
  for (const thing of things) if (!('destroy' in thing)) await new Promise((resolve) => thing.close(resolve));
});

/** A connection on loopback: the client, paused (it reads nothing until resumed), and the server's side of it. */
async function connected(): Promise<{ client: Socket; server: Socket }> {
  const server = createServer();
  opened.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  client.pause();
  client.on('error', () => {});
  opened.push(client);
  const serverSide = await accepted;
  serverSide.on('error', () => {});
  opened.push(serverSide);
  await new Promise((resolve) => (client.connecting ? client.once('connect', resolve) : resolve(undefined)));
  return { client, server: serverSide };
}

/** Everything the client reads until it has `length` bytes or 5 s passed. */
async function readAll(client: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  client.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    got += chunk.length;
  });
  client.resume();
  for (let waited = 0; waited < 5_000 && got < length; waited += 5) await sleep(5);
  return Buffer.concat(chunks);
}

const digest = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

// Far more than loopback's socket buffers hold: the kernel cannot take it all at once.
const LARGE_BYTES = 64 * 1024 * 1024;

test('a small write is taken by the kernel at once: no callback, nothing waiting, the bytes arrive and are counted', async () => {
  const { client, server } = await connected();
  const calls: boolean[] = [];
  expect(writeToHandle(server, Buffer.from('hello '), (failed) => calls.push(failed))).toBe('taken');
  expect(writeToHandle(server, [Buffer.from('to '), Buffer.from('you')], (failed) => calls.push(failed))).toBe('taken');
  expect(bytesWaiting(server)).toBe(0);
  expect(server.bytesWritten).toBe(12);
  expect((await readAll(client, 12)).toString()).toBe('hello to you');
  expect(calls).toEqual([]);
});

test('what the kernel cannot take waits, counted in bytesWaiting and not in bytesTaken, until the client reads it all; then done(false), once', async () => {
  const { client, server } = await connected();
  const head = Buffer.from('head:');
  const body = Buffer.alloc(LARGE_BYTES, 7);
  body.write('the end', LARGE_BYTES - 7);
  const calls: boolean[] = [];
  expect(writeToHandle(server, [head, body], (failed) => calls.push(failed))).toBe('queued');
  expect(bytesWaiting(server)).toBeGreaterThan(0);
  expect(server.writableLength).toBe(0);
  // Node counts the write whole once handed over; what the kernel took is less, by what waits.
  expect(server.bytesWritten).toBe(head.length + LARGE_BYTES);
  expect(bytesTaken(server)).toBe(head.length + LARGE_BYTES - bytesWaiting(server));
  await sleep(50);
  expect(calls).toEqual([]);
  const received = await readAll(client, head.length + LARGE_BYTES);
  expect(digest(received)).toBe(digest(Buffer.concat([head, body])));
  for (let waited = 0; waited < 2_000 && calls.length === 0; waited += 5) await sleep(5);
  expect(calls).toEqual([false]);
  expect(bytesWaiting(server)).toBe(0);
  expect(bytesTaken(server)).toBe(head.length + LARGE_BYTES);
});

test('a destroy while bytes wait cancels them: done(true), and the socket closes', async () => {
  const { server } = await connected();
  const calls: boolean[] = [];
  expect(writeToHandle(server, Buffer.alloc(LARGE_BYTES), (failed) => calls.push(failed))).toBe('queued');
  const closed = new Promise((resolve) => server.once('close', resolve));
  server.destroy();
  await closed;
  expect(calls).toEqual([true]);
});

test('a client gone while bytes wait: done(true) once the kernel says so', async () => {
  const { client, server } = await connected();
  const calls: boolean[] = [];
  expect(writeToHandle(server, Buffer.alloc(LARGE_BYTES), (failed) => calls.push(failed))).toBe('queued');
  client.resetAndDestroy();
  for (let waited = 0; waited < 2_000 && calls.length === 0; waited += 5) await sleep(5);
  expect(calls).toEqual([true]);
});

test("with bytes of Node's own stream waiting, the socket is destroyed rather than written past them; a closed one is not written", async () => {
  const { client, server } = await connected();
  let received = '';
  client.on('data', (chunk: Buffer) => (received += chunk.toString()));
  const clientClosed = new Promise((resolve) => client.once('close', resolve));
  client.resume();
  server.cork();
  server.write('first');
  expect(writeToHandle(server, Buffer.from('second'), () => {})).toBe('failed');
  expect(server.destroyed).toBe(true);
  await clientClosed;
  expect(received).toBe('');
  expect(writeToHandle(server, Buffer.from('third'), () => {})).toBe('failed');
});

test('under --throw-deprecation with --pending-deprecation, sockets are not written here, and nothing is thrown later', async () => {
  // process.binding's deprecation would be thrown on a later tick, ending the process.
  const module = fileURLToPath(new URL('../../src/http/handle-write.ts', import.meta.url));
  const script = `import(${JSON.stringify(module)}).then((m) => { console.log(m.canWriteToHandle()); setTimeout(() => console.log('alive'), 50); });`;
  const flags = ['--pending-deprecation', '--throw-deprecation', '--import', 'tsx', '--input-type=module', '-e', script];
  const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
    execFile(process.execPath, flags, (error, out, err) => (error ? reject(error) : resolve({ stdout: out, stderr: err }))),
  );
  expect(stdout).toBe('false\nalive\n');
  expect(stderr).toBe('');
});
