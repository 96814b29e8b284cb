import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { upstreamNamespace } from '../auth/tenants.js';
import { BadGatewayError, GatewayError } from '../errors.js';
import { nextBodyChunk } from './body-chunks.js';
import type { UpstreamCircuits } from './circuit.js';
import { RetryableUpstreamError, errorForUpstreamStatus, recordingTooLarge, upstreamTimeout, upstreamUnreachable } from './errors.js';
import { BodyEnding, endsWithWholeFrame } from './mp3-ending.js';

export interface FlyflowClientOptions {
  /** `https://api.flyflow.dev/v1`, no trailing slash. */
  baseUrl: string;
  /** Budget for the response head, retries included (README, "Responses"). */
  timeoutMs: number;
  /** Longest silence allowed while a body streams. */
  bodyIdleTimeoutMs: number;
  /** Larger bodies are refused from Content-Length up front and while streaming. */
  maxRecordingBytes: number;
  /** Attempts per request, the first included; default 3 (two retries). */
  maxAttempts?: number;
  /** First retry delay; later ones grow exponentially, with jitter. Default 100 ms. */
  initialBackoffMs?: number;
  /** Fail fast while an account's requests keep failing, one circuit per account; without them every request tries. */
  circuits?: UpstreamCircuits;
}

export interface OpenRecordingOptions {
  /**
   * The upstream account: the tenant's cache namespace, which picks the
   * circuit. Default: the namespace of `apiKey` on this base URL, the same one.
   */
  account?: string;
  /**
   * The deadline for the head (a 504 once it passes), across retries: the
   * download manager's budget, `timeoutMs` from the download's start, which
   * counts a wait for a download slot too. Without one, `timeoutMs` from
   * this call.
   */
  signal?: AbortSignal;
}

/** An upstream 200 whose head passed every check; the body is still to be read. */
export interface UpstreamRecording {
  contentType: string;
  contentLength: number | undefined;
  lastModified: string | undefined;
  /** The body, chunk by chunk. Throws a GatewayError if it stalls, breaks or grows too large. */
  chunks(): AsyncIterable<Uint8Array>;
  /** Stops the transfer and frees the connection. */
  cancel(): void;
}

export interface FlyflowClient {
  /**
   * Requests `{baseUrl}/call/recording/{id}.mp3` with the given upstream key.
   * @throws NotFoundError, BadGatewayError, GatewayTimeoutError, or
   *   ServiceUnavailableError while the account's circuit is open.
   */
  openRecording(callId: string, apiKey: string, options?: OpenRecordingOptions): Promise<UpstreamRecording>;
  /** `upstream.timeout_ms`: the budget for a usable head, retries included. */
  readonly timeoutMs: number;
}

const MAX_REDIRECTS = 5;
// Connections to the upstream stay open between downloads, as fetch() kept them.
const HTTP_AGENT = new HttpAgent({ keepAlive: true });
const HTTPS_AGENT = new HttpsAgent({ keepAlive: true });

/**
 * One GET with node:http, resolving with the response head: about a
 * millisecond less per cold miss than fetch(), whose Request, Headers and web
 * stream objects a proxy does not need. Aborting `signal` before the head
 * destroys the request, without an error: not http's own `signal` option,
 * which, once a short body has been read, destroys a socket already on its
 * way back to the agent with an error nobody listens to. After the head, the
 * response is its holder's to destroy.
 */
function httpGet(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const secure = url.protocol === 'https:';
    const request = (secure ? httpsRequest : httpRequest)(url, { headers, agent: secure ? HTTPS_AGENT : HTTP_AGENT }, (response) => {
      signal.removeEventListener('abort', abort);
      // A read error reaches the reader through its iterator; this only keeps
      // one after the reader has gone from crashing the process.
      response.on('error', () => {});
      resolve(response);
    });
    const abort = () => {
      request.destroy();
      reject(signal.reason);
    };
    signal.addEventListener('abort', abort, { once: true });
    request.on('error', (error) => {
      signal.removeEventListener('abort', abort);
      reject(error);
    });
    request.end();
  });
}
function cutShort(): RetryableUpstreamError {
  return new RetryableUpstreamError(
    'Upstream body, framed by its connection only, ended inside an MP3 frame or with a broken connection: cut short',
  );
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const DEFAULT_MAX_ATTEMPTS = 3;
const DEFAULT_INITIAL_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2_000;

/** Creates the one place that talks to Flyflow. Options are checked here, once. */
export function createFlyflowClient(options: FlyflowClientOptions): FlyflowClient {
  const upstreamOrigin = new URL(options.baseUrl).origin;
  const retryPolicy = retry(
    handleWhen((error) => error instanceof RetryableUpstreamError),
    {
      maxAttempts: (options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS) - 1,
      backoff: new ExponentialBackoff({
        initialDelay: options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS,
        maxDelay: MAX_BACKOFF_MS,
      }),
    },
  );

  // The server key goes only to the upstream's own origin: a redirect to a
  // storage host gets the request without it (README, "Responses").
  async function getFollowingRedirects(callId: string, apiKey: string, signal: AbortSignal): Promise<IncomingMessage> {
    let url = new URL(`${options.baseUrl}/call/recording/${callId}.mp3`);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = {
        Accept: 'audio/mpeg',
        'Content-Type': 'application/json',
        'Accept-Encoding': 'identity',
      };
      if (url.origin === upstreamOrigin) headers.Authorization = `Bearer ${apiKey}`;
      const response = await httpGet(url, headers, signal);
      const location = response.headers.location;
      if (!REDIRECT_STATUSES.has(response.statusCode ?? 0) || location === undefined) return response;
      response.destroy();
      if (hop === MAX_REDIRECTS) throw new BadGatewayError(`Upstream redirected more than ${MAX_REDIRECTS} times`);
      url = new URL(location, url);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new BadGatewayError('Upstream redirected to an unsupported scheme');
      }
    }
  }

  function checkHead(response: IncomingMessage): { contentType: string; contentLength: number | undefined } {
    if (response.statusCode !== 200) throw errorForUpstreamStatus(response.statusCode ?? 0);
    const contentType = response.headers['content-type']?.split(';')[0]?.trim().toLowerCase() ?? '';
    if (!contentType.startsWith('audio/')) throw new BadGatewayError('Upstream answered with a body that is not audio');
    const lengthHeader = response.headers['content-length'];
    const contentLength = lengthHeader === undefined ? undefined : Number(lengthHeader);
    if (contentLength !== undefined && !Number.isSafeInteger(contentLength)) {
      throw new BadGatewayError('Upstream sent an invalid Content-Length');
    }
    if (contentLength !== undefined && contentLength > options.maxRecordingBytes) {
      throw recordingTooLarge();
    }
    return { contentType, contentLength };
  }

  function wrapBody(response: IncomingMessage, head: ReturnType<typeof checkHead>): UpstreamRecording {
    // Destroying a response not read to its end closes its connection; one read whole stays with the agent.
    const stop = () => response.destroy();
    // Neither a length nor chunks: the body ends with the connection, so one cut short looks whole (RFC 9112, 6.3),
    // a reset connection's included (Node ends such a body when its socket closes, whatever closed it).
    const ending = head.contentLength === undefined && response.headers['transfer-encoding'] === undefined ? new BodyEnding() : undefined;
    let connectionFailed = false;
    if (ending) response.socket?.once('error', () => (connectionFailed = true));
    return {
      ...head,
      lastModified: response.headers['last-modified'],
      cancel: stop,
      async *chunks() {
        let received = 0;
        let ended = false;
        try {
          for (;;) {
            const chunk = await nextBodyChunk(response, options.bodyIdleTimeoutMs);
            if (chunk === null) {
              if (ending && (connectionFailed || !endsWithWholeFrame(ending.bytes()))) throw cutShort();
              ended = true;
              return;
            }
            received += chunk.byteLength;
            if (received > options.maxRecordingBytes) {
              throw recordingTooLarge();
            }
            ending?.add(chunk);
            yield chunk;
          }
        } finally {
          // A body read to its end leaves its connection to the agent, for the next download.
          if (!ended) stop();
        }
      },
    };
  }

  async function attempt(callId: string, apiKey: string, deadline: AbortSignal): Promise<UpstreamRecording> {
    try {
      const response = await getFollowingRedirects(callId, apiKey, deadline);
      let head: ReturnType<typeof checkHead>;
      try {
        head = checkHead(response);
      } catch (error) {
        response.destroy();
        throw error;
      }
      return wrapBody(response, head);
    } catch (error) {
      if (deadline.aborted) throw upstreamTimeout(error);
      if (error instanceof GatewayError) throw error;
      throw upstreamUnreachable(error);
    }
  }

  async function openWithRetries(callId: string, apiKey: string, budget: AbortSignal | undefined): Promise<UpstreamRecording> {
    const deadline = budget ?? AbortSignal.timeout(options.timeoutMs);
    try {
      return await retryPolicy.execute(() => attempt(callId, apiKey, deadline), deadline);
    } catch (error) {
      if (error instanceof GatewayError) throw error;
      // cockatiel rejects with its own TaskCancelledError when the deadline ends a backoff wait.
      if (deadline.aborted) throw upstreamTimeout(error);
      throw upstreamUnreachable(error);
    }
  }

  const { circuits } = options;
  return {
    timeoutMs: options.timeoutMs,
    openRecording(callId, apiKey, open = {}) {
      // A budget already spent (the slot wait took it all) is a timeout that
      // never reached Flyflow, so it must not count against the circuit.
      if (open.signal?.aborted) return Promise.reject(upstreamTimeout(open.signal.reason));
      if (!circuits) return openWithRetries(callId, apiKey, open.signal);
      const circuit = circuits.forAccount(open.account ?? upstreamNamespace(options.baseUrl, apiKey));
      return circuit.run(() => openWithRetries(callId, apiKey, open.signal));
    },
  };
}
