/**
 * Raw HTTP/1.1 over loopback TCP, for tests that compare servers byte for
 * byte: what a client receives, with bodies shown as digests, and what may
 * differ between two servers normalised away.
 */
import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A listening server and its side of each connection, by the client's port. */
export interface Listening {
  server: Server;
  base: { port: number };
  accepted: Map<number, Socket>;
}

/** Listens on 127.0.0.1 and notes each connection the server accepts. */
export async function listen(server: Server): Promise<Listening> {
  const accepted = new Map<number, Socket>();
  server.on('connection', (socket: Socket) => accepted.set(socket.remotePort ?? 0, socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: { port: (server.address() as AddressInfo).port }, accepted };
}

/** Closes every connection, then the server. */
export async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A body as a diff can show it: its length and digest, and its text when short and printable. */
function bodyToken(body: string): string {
  const digest = createHash('sha256').update(body, 'latin1').digest('hex').slice(0, 16);
  const text = body.length <= 300 && /^[\t\r\n\x20-\x7e]*$/.test(body) ? ` ${JSON.stringify(body)}` : '';
  return `[body ${body.length} bytes ${digest}${text}]`;
}

/**
 * Walks the whole final answers (1xx included, not counted) in `received`,
 * given each request's method: their statuses, whether the last keeps the
 * connection, and `readable`: the bytes with each body as a {@link bodyToken}.
 */
export function wholeAnswers(received: string, methods: readonly string[]): { statuses: number[]; keepAlive: boolean; readable: string } {
  let at = 0;
  const statuses: number[] = [];
  let keepAlive = true;
  let readable = '';
  while (statuses.length < methods.length) {
    const end = received.indexOf('\r\n\r\n', at);
    if (end === -1) break;
    const head = received.slice(at, end + 4);
    const status = Number(head.slice(9, 12));
    let next = end + 4;
    if (status >= 100 && status < 200) {
      readable += head;
      at = next;
      continue;
    }
    if (methods[statuses.length] !== 'HEAD' && status !== 204 && status !== 304) {
      const length = /\r\nContent-Length: *(\d+)\r\n/i.exec(head);
      // No length: the body runs to the connection's end.
      if (!length) break;
      next += Number(length[1]);
    }
    if (received.length < next) break;
    keepAlive = /\r\nConnection: keep-alive\r\n/i.test(head);
    readable += head + (next > end + 4 ? bodyToken(received.slice(end + 4, next)) : '');
    at = next;
    statuses.push(status);
  }
  return { statuses, keepAlive, readable: readable + received.slice(at) };
}

/** GET unless the request is a HEAD. */
export const methodOf = (raw: string) => (/^\s*HEAD /.test(raw) ? 'HEAD' : 'GET');

/**
 * Sends `parts` on a new connection, each once the server has read the one
 * before (so they arrive as separate reads), and resolves with all that came
 * back (bodies as tokens): once every answer is whole, a moment later if the connection is kept
 * alive (`[open]`), else when the server ends it (`[end]`).
 */
export async function exchange(
  to: Listening,
  parts: readonly string[],
  methods: readonly string[] = [methodOf(parts.join(''))],
): Promise<string> {
  const socket = connect(to.base.port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once('connect', resolve));
  let received = '';
  let ended = false;
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  const end = new Promise<void>((resolve) => {
    socket.once('close', () => {
      ended = true;
      resolve();
    });
  });
  socket.on('error', () => {});
  let sent = 0;
  for (const [i, part] of parts.entries()) {
    await new Promise((resolve) => socket.write(part, 'latin1', resolve));
    sent += Buffer.byteLength(part, 'latin1');
    if (i < parts.length - 1) await serverHasRead(to, socket, sent);
  }
  for (let waited = 0; waited < 5_000 && !ended; waited += 5) {
    const { statuses, keepAlive } = wholeAnswers(received, methods);
    if (statuses.length === methods.length && keepAlive) {
      // Anything the server would still send (a stray second answer) comes now.
      await Promise.race([end, sleep(20)]);
      break;
    }
    await Promise.race([end, sleep(5)]);
  }
  socket.destroy();
  return `${wholeAnswers(received, methods).readable}${ended ? '[end]' : '[open]'}`;
}

/** Waits (at most `ms`) until the server's side of `socket` has read `bytes`. */
export async function serverHasRead(to: Listening, socket: Socket, bytes: number, ms = 1_000): Promise<void> {
  for (const until = performance.now() + ms; performance.now() < until; ) {
    const serverSide = to.accepted.get(socket.localPort ?? -1);
    if (serverSide && serverSide.bytesRead >= bytes) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const GENERATED_ID = /\r\nX-Request-Id: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\r\n/gi;

/** What may differ between two servers: the Date, an id made up per answer and, unless `tokens`, the tokens left. */
export function normalise(bytes: string, tokens = false): string {
  let out = bytes.replace(/\r\nDate: [^\r\n]*\r\n/g, '\r\nDate: <date>\r\n').replace(GENERATED_ID, '\r\nX-Request-Id: <generated>\r\n');
  if (!tokens) out = out.replace(/\r\nRateLimit-Remaining: \d+\r\n/g, '\r\nRateLimit-Remaining: <n>\r\n');
  return out;
}

/** The statuses in what {@link exchange} returned. */
export const statusesOf = (text: string) => [...text.matchAll(/(?:^|\r\n\r\n|\])HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
