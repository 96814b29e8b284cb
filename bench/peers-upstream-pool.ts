/**
 * The floors' raw upstream client (peers-net-floor.ts, and peers-node-floor.ts
 * with `PEERS_FLOOR_UPSTREAM_CLIENT=raw`): keep-alive connections to the
 * bench's upstream, each GET written and its answer read as bytes, so a
 * floor's cold miss can be measured without Node's HTTP client.
 */
import net from 'node:net';

const HEAD_END = Buffer.from('\r\n\r\n');
const CONTENT_LENGTH_FIELD = /\r\ncontent-length:[ \t]*(\d+)/i;
const CONTENT_TYPE_FIELD = /\r\ncontent-type:[ \t]*([^\r]*)/i;
const ETAG_FIELD = /\r\netag:[ \t]*([^\r]*)/i;
const LAST_MODIFIED_FIELD = /\r\nlast-modified:[ \t]*([^\r]*)/i;

/** What a floor passes on from an upstream head: its type (audio/mpeg when it names none) and validators. */
export interface UpstreamFields {
  contentType: string;
  etag: string | undefined;
  lastModified: string | undefined;
}

/** An upstream head's {@link UpstreamFields}, from the head as `UpstreamPool.fetch` hands it over. */
export function headFields(head: string): UpstreamFields {
  return {
    contentType: CONTENT_TYPE_FIELD.exec(head)?.[1] ?? 'audio/mpeg',
    etag: ETAG_FIELD.exec(head)?.[1],
    lastModified: LAST_MODIFIED_FIELD.exec(head)?.[1],
  };
}

/** One upstream connection: idle in the pool, or carrying one miss's answer. */
interface UpstreamConnection {
  socket: net.Socket;
  /** The miss this connection's bytes go to, while one is under way. */
  onData: ((chunk: Buffer) => void) | undefined;
  /** That miss's end when the connection closes under it. */
  onClose: (() => void) | undefined;
}

/**
 * Keep-alive connections to the upstream, written to and read raw: a miss
 * costs a write and the reads of the answer, with no HTTP client objects.
 * Assumes the bench's upstream (Content-Length, no chunked bodies).
 */
export class UpstreamPool {
  readonly #idle: UpstreamConnection[] = [];

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly requestHead: (callId: string) => string,
  ) {}

  /**
   * Sends the GET for `callId`: `on.head` gets the status, the head and the
   * body's length, `on.body` each piece of the body as it arrives, `on.end`
   * the whole body once Content-Length bytes are in, `on.failed` a head
   * without a length or a connection closed first.
   */
  fetch(
    callId: string,
    on: { head(status: number, head: string, length: number): void; body(chunk: Buffer): void; end(body: Buffer): void; failed(): void },
  ): void {
    const connection = this.#idle.pop() ?? this.#connect();
    let head: Buffer | undefined;
    const chunks: Buffer[] = [];
    let length = -1;
    let received = 0;
    const finish = (): void => {
      connection.onData = undefined;
      connection.onClose = undefined;
      this.#idle.push(connection);
      on.end(Buffer.concat(chunks, received));
    };
    connection.onData = (chunk) => {
      if (length >= 0) {
        chunks.push(chunk);
        received += chunk.length;
        on.body(chunk);
        if (received >= length) finish();
        return;
      }
      head = head ? Buffer.concat([head, chunk]) : chunk;
      const end = head.indexOf(HEAD_END);
      if (end === -1) return;
      const text = head.toString('latin1', 0, end);
      const status = Number(text.slice(9, 12));
      length = Number(CONTENT_LENGTH_FIELD.exec(text)?.[1] ?? Number.NaN);
      if (!Number.isSafeInteger(length)) {
        // Its close reports the failure (onClose).
        connection.socket.destroy();
        return;
      }
      const first = head.subarray(end + HEAD_END.length);
      chunks.push(first);
      received = first.length;
      on.head(status, text, length);
      if (first.length > 0) on.body(first);
      if (received >= length) finish();
    };
    connection.onClose = on.failed;
    connection.socket.write(this.requestHead(callId), 'latin1');
  }

  #connect(): UpstreamConnection {
    const connection: UpstreamConnection = { socket: net.connect(this.port, this.host), onData: undefined, onClose: undefined };
    connection.socket.setNoDelay(true);
    connection.socket.on('data', (chunk: Buffer) => connection.onData?.(chunk));
    connection.socket.on('error', () => connection.socket.destroy());
    connection.socket.once('close', () => {
      const at = this.#idle.indexOf(connection);
      if (at !== -1) this.#idle.splice(at, 1);
      connection.onClose?.();
    });
    return connection;
  }
}

/** A pool for the upstream at `upstreamBase` (`http://127.0.0.1:PORT/v1`), sending `authorization` with each GET. */
export function upstreamPool(upstreamBase: string, authorization: string): UpstreamPool {
  const upstream = new URL(upstreamBase);
  return new UpstreamPool(
    upstream.hostname,
    Number(upstream.port),
    (callId) =>
      `GET ${upstream.pathname}/call/recording/${callId}.mp3 HTTP/1.1\r\nHost: ${upstream.host}\r\nAuthorization: ${authorization}\r\nConnection: keep-alive\r\n\r\n`,
  );
}
