import { type IncomingMessage, type Server, type ServerResponse, createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { syntheticRecording } from '../../dev/recording-bytes.js';
import { GatewayTimeoutError } from '../../src/errors.js';
import { nextBodyChunk } from '../../src/upstream/body-chunks.js';
import { RetryableUpstreamError } from '../../src/upstream/errors.js';

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A loopback server answering every request with `answer`; resolves with the response head of one GET to it. */
async function responseFrom(answer: (response: ServerResponse) => void): Promise<IncomingMessage> {
  const server = createServer((_request, response) => answer(response));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => get({ host: '127.0.0.1', port, agent: false }, resolve).on('error', reject));
}

/** Every chunk up to the end, and how many of them came at once rather than as a promise. */
async function readToEnd(response: IncomingMessage, idleMs = 5_000): Promise<{ body: Buffer; atOnce: number }> {
  const chunks: Buffer[] = [];
  let atOnce = 0;
  for (;;) {
    const next = nextBodyChunk(response, idleMs);
    if (!(next instanceof Promise)) atOnce++;
    const chunk = await next;
    if (chunk === null) return { body: Buffer.concat(chunks), atOnce };
    chunks.push(chunk);
  }
}

/** Listeners of the events nextBodyChunk waits for: Node's own, plus any it left behind. */
function waitListeners(response: IncomingMessage): number {
  return ['readable', 'end', 'close'].reduce((sum, event) => sum + response.listenerCount(event), 0);
}

describe("an upstream response's body, chunk by chunk", () => {
  test('reads a whole body, bytes already in at once without a promise, and ends with null', async () => {
    const bytes = syntheticRecording(300_000);
    const response = await responseFrom((res) => {
      res.writeHead(200, { 'Content-Length': bytes.length });
      res.end(bytes);
    });
    const nodes = waitListeners(response);
    // Let the body arrive before the first read.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { body, atOnce } = await readToEnd(response);
    expect(body.equals(bytes)).toBe(true);
    expect(atOnce).toBeGreaterThan(0);
    expect(waitListeners(response)).toBe(nodes);
  });

  test('a body without Content-Length that ends with its connection ends cleanly', async () => {
    const bytes = syntheticRecording(50_000);
    const response = await responseFrom((res) => {
      res.writeHead(200, { Connection: 'close' });
      res.write(bytes.subarray(0, 20_000));
      setTimeout(() => res.end(bytes.subarray(20_000)), 30);
    });
    expect(response.headers['transfer-encoding']).toBe('chunked');
    const { body } = await readToEnd(response);
    expect(body.equals(bytes)).toBe(true);
  });

  test('a body cut short of its Content-Length rejects as ended early, which is worth another attempt', async () => {
    const bytes = syntheticRecording(40_000);
    const response = await responseFrom((res) => {
      res.writeHead(200, { 'Content-Length': bytes.length });
      res.write(bytes.subarray(0, 10_000));
      setTimeout(() => res.socket?.destroy(), 30);
    });
    const nodes = waitListeners(response);
    const read = readToEnd(response);
    await expect(read).rejects.toBeInstanceOf(RetryableUpstreamError);
    await expect(read).rejects.toThrow('Upstream body ended early');
    expect(waitListeners(response)).toBe(nodes);
  });

  test('a body silent for longer than the idle time rejects as stalled and is destroyed', async () => {
    const response = await responseFrom((res) => {
      res.writeHead(200, { 'Content-Length': 40_000 });
      res.write(syntheticRecording(40_000).subarray(0, 1_000));
    });
    const nodes = waitListeners(response);
    expect(await nextBodyChunk(response, 5_000)).toHaveLength(1_000);
    const startedAt = Date.now();
    const stalled = nextBodyChunk(response, 150);
    await expect(stalled).rejects.toBeInstanceOf(GatewayTimeoutError);
    await expect(stalled).rejects.toThrow('Upstream body stalled');
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(140);
    expect(response.destroyed).toBe(true);
    expect(waitListeners(response)).toBe(nodes);
  });

  test('a response destroyed by its holder (a cancelled download) rejects the wait under way, and any read after', async () => {
    const response = await responseFrom((res) => {
      res.writeHead(200, { 'Content-Length': 40_000 });
      res.write(syntheticRecording(40_000).subarray(0, 1_000));
    });
    await nextBodyChunk(response, 5_000);
    const waiting = nextBodyChunk(response, 5_000);
    response.destroy();
    await expect(waiting).rejects.toThrow('Upstream body ended early');
    await expect(Promise.resolve(nextBodyChunk(response, 5_000))).rejects.toBeInstanceOf(RetryableUpstreamError);
  });
});
