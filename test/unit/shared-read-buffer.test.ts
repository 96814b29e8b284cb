import { connect, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, expect, test } from 'vitest';
import { createServer as createHttpServer } from 'node:http';
import { isSharedReadBuffer, readIntoSharedBuffer, stopSharedReads } from '../../src/http/shared-read-buffer.js';

const opened: Array<Server | Socket> = [];

afterEach(async () => {
  const things = opened.splice(0);
  for (const thing of things) if ('destroy' in thing) thing.destroy();
  for (const thing of things) if (!('destroy' in thing)) await new Promise((resolve) => thing.close(resolve));
});

/** A server whose every connection reads into the shared buffer; the client and the server's side of it. */
async function connected(): Promise<{
  client: Socket;
  server: Socket;
  reads: Array<{ text: string; shared: boolean }>;
  switched: boolean;
}> {
  const reads: Array<{ text: string; shared: boolean }> = [];
  let switched = false;
  const accepted = new Promise<Socket>((resolve) => {
    const server = createServer((socket) => {
      opened.push(socket);
      switched = readIntoSharedBuffer(socket, (chunk) => reads.push({ text: chunk.toString('latin1'), shared: isSharedReadBuffer(chunk) }));
      resolve(socket);
    });
    opened.push(server);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address() as { port: number };
      const client = connect(address.port, '127.0.0.1');
      client.on('error', () => {});
      opened.push(client);
      clientSocket = client;
    });
  });
  let clientSocket: Socket | undefined;
  const server = await accepted;
  await new Promise((resolve) => (clientSocket!.connecting ? clientSocket!.once('connect', resolve) : resolve(undefined)));
  return { client: clientSocket!, server, reads, switched };
}

async function until(condition: () => boolean): Promise<void> {
  for (let waited = 0; waited < 2_000 && !condition(); waited += 5) await sleep(5);
}

test('reads arrive as views of the shared buffer, one per read, and a second switch of the same socket is refused', async () => {
  const { client, server, reads, switched } = await connected();
  expect(switched).toBe(true);
  client.write('hello');
  await until(() => reads.length === 1);
  client.write('world');
  await until(() => reads.length === 2);
  expect(reads).toEqual([
    { text: 'hello', shared: true },
    { text: 'world', shared: true },
  ]);
  expect(readIntoSharedBuffer(server, () => {})).toBe(false);
  expect(isSharedReadBuffer(Buffer.from('hello'))).toBe(false);
});

test('pause() stops the reads and resume() starts them again; the end of the stream still ends the socket', async () => {
  const { client, server, reads } = await connected();
  server.pause();
  client.write('held');
  await sleep(50);
  expect(reads).toEqual([]);
  server.resume();
  await until(() => reads.length === 1);
  expect(reads.map((read) => read.text)).toEqual(['held']);
  const ended = new Promise((resolve) => server.once('end', resolve));
  client.end();
  await ended;
});

test("after stopSharedReads, Node's HTTP server takes the connection and reads every request from it", async () => {
  const { client, server, reads } = await connected();
  client.write('GET /one HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => reads.length === 1);
  const http = createHttpServer((request, response) => response.end(`answered ${request.url}`));
  stopSharedReads(server);
  server.unshift(Buffer.from(reads[0]!.text, 'latin1'));
  http.emit('connection', server);
  let received = '';
  client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  await until(() => received.includes('answered /one'));
  client.write('GET /two HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => received.includes('answered /two'));
  expect(received.match(/HTTP\/1\.1 200 OK\r\n/g)).toHaveLength(2);
  expect(received).toContain('answered /two');
  expect(reads).toHaveLength(1);
  http.close();
});

test('after stopSharedReads nothing more reaches onRead, even with no parser above the shared buffer (a CONNECT unconsumes it)', async () => {
  const { client, server, reads } = await connected();
  stopSharedReads(server);
  const ended = new Promise((resolve) => server.once('end', resolve));
  server.resume();
  client.end('late bytes');
  await ended;
  expect(reads).toEqual([]);
});
