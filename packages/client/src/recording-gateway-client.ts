import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { canonicalCallId, describeValue } from './call-id.js';
import { startDeadline, type Deadline } from './deadline.js';
import { fsyncCreatedFolders, fsyncDirectory, fsyncFile } from './durable-file.js';
import { declaredLength, parseRetryAfter, readTextCapped } from './response-reading.js';
import { IncompleteDownloadError, RecordingGatewayError, RecordingGatewayTimeoutError, type RecordingGatewayRequest } from './errors.js';

/** How long a call may wait for the gateway's answer, or between two pieces of a recording's body. */
export const DEFAULT_TIMEOUT_MS = 60_000;
// setTimeout's own ceiling; a larger delay would fire at once.
const MAX_TIMEOUT_MS = 2_147_483_647;
// An error answer is read only this far: enough for the JSON error, not a whole HTML page.
const ERROR_BODY_MAX_BYTES = 16 * 1024;
const ERROR_SNIPPET_CHARS = 200;

export interface RecordingGatewayClientOptions {
  /** The gateway's URL, e.g. `https://recordings.example.com`; a trailing `/v1` is accepted too. */
  baseUrl: string;
  /** A tenant API key, sent as `Authorization: Bearer <apiKey>` and nowhere else. */
  apiKey: string;
  /**
   * Milliseconds to wait for an answer, and, while a recording arrives, for its
   * next bytes: a large recording on a slow but steady link is never cut off.
   * Default {@link DEFAULT_TIMEOUT_MS}.
   */
  timeoutMs?: number;
  /** A fetch implementation (a proxy-aware one, or a test double). Default: the global fetch. */
  fetch?: typeof fetch;
}

/** What {@link RecordingGatewayClient.getCallRecording} wrote. */
export interface DownloadedRecording {
  /** The absolute path of the recording. */
  path: string;
  bytes: number;
  /** The gateway's strong ETag; absent when this answer was the first download of the recording. */
  etag: string | undefined;
}

export interface CreateSignedUrlOptions {
  /** Seconds the URL stays valid; the gateway's default (300) when omitted, at most the tenant's maximum. */
  ttlSeconds?: number;
  /**
   * The id of the tenant's signing key to sign with (during a key rotation,
   * the new one); the tenant's first key when omitted. A gateway too old to
   * know it signs with the first key: the call then fails rather than hand
   * back a URL signed with a key other than this one.
   */
  kid?: string;
}

export interface SignedRecordingUrl {
  /** Absolute when the gateway knows its public URL, otherwise a path on the gateway. */
  url: string;
  /** Unix seconds; the URL works while now < expiresAt. */
  expiresAt: number;
}

function parseBaseUrl(baseUrl: unknown): string {
  if (typeof baseUrl !== 'string' || baseUrl === '')
    throw new TypeError('baseUrl must be a URL string such as "https://recordings.example.com"');
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch (error) {
    throw new TypeError(`baseUrl is not a valid URL: ${describeValue(baseUrl)}`, { cause: error });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new TypeError(`baseUrl must be an http or https URL, got ${url.protocol}`);
  // Never echo the URL here: it holds a credential.
  if (url.username || url.password) throw new TypeError('baseUrl must not contain credentials; pass the tenant key as apiKey');
  if (url.search || url.hash) throw new TypeError('baseUrl must not have a query string or fragment');
  // The gateway keeps Flyflow's paths, so a Flyflow-style base ending in /v1 means the same gateway.
  const prefix = url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  return `${url.origin}${prefix}`;
}

/** The kid a signed URL names, or null when it names none (or is no URL). */
function signedWith(url: string, baseUrl: string): string | null {
  try {
    return new URL(url, baseUrl).searchParams.get('kid');
  } catch {
    return null;
  }
}

/**
 * A client for a recording gateway, for tenant backends on Node 20 or later:
 * downloads recordings to files, mints signed URLs for `<audio src>`, and
 * purges cached copies. The counterpart of Flyflow's
 * `client.get_call_recording(call_id, output_path)`.
 */
export class RecordingGatewayClient {
  /** The normalised base URL requests go to (no trailing slash, no `/v1`). */
  readonly baseUrl: string;
  readonly timeoutMs: number;
  // Private, so util.inspect, console.log and JSON.stringify never show it.
  readonly #apiKey: string;
  readonly #fetch: typeof fetch;

  constructor(options: RecordingGatewayClientOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('RecordingGatewayClient needs { baseUrl, apiKey }');
    this.baseUrl = parseBaseUrl(options.baseUrl);
    if (typeof options.apiKey !== 'string' || !/^[\x21-\x7e]+$/.test(options.apiKey)) {
      throw new TypeError('apiKey must be a non-empty string of printable ASCII without spaces (a tenant API key)');
    }
    this.#apiKey = options.apiKey;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
      throw new RangeError(`timeoutMs must be an integer from 1 to ${MAX_TIMEOUT_MS}, got ${describeValue(timeoutMs)}`);
    }
    this.timeoutMs = timeoutMs;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TypeError('fetch must be a function; Node 20 or later has a global fetch');
    this.#fetch = (input, init) => fetchImpl(input, init);
  }

  /**
   * Downloads a recording to `outputPath`, creating its missing folders once
   * the gateway has answered with the recording. The body streams to a temporary
   * file in the same folder, is checked against its Content-Length, flushed to
   * disk and renamed into place, replacing any file there: readers of
   * `outputPath` see the old file or the whole new one, never a partial one. A
   * failed or interrupted download leaves neither the file nor the temporary file.
   * @throws TypeError for a bad call id, before any request.
   * @throws RecordingGatewayError for the gateway's errors (404, 401, ...),
   * RecordingGatewayTimeoutError, IncompleteDownloadError; file-system errors
   * (a full disk, a path through a file, no permission) as Node's own errors.
   */
  async getCallRecording(callId: number | string, outputPath: string): Promise<DownloadedRecording> {
    const id = canonicalCallId(callId);
    if (typeof outputPath !== 'string' || outputPath === '') throw new TypeError('outputPath must be a non-empty file path');
    const target = path.resolve(outputPath);
    const request = this.#request('GET', `/v1/call/recording/${id}.mp3`);
    const deadline = startDeadline(this.timeoutMs);
    try {
      const response = await this.#send(request, id, deadline, { headers: { accept: 'audio/mpeg' } });
      if (response.status !== 200) throw await this.#answerError(response, request, id);
      const contentType = response.headers.get('content-type') ?? '';
      if (!/^audio\//i.test(contentType)) {
        throw new RecordingGatewayError(
          `Recording gateway answered 200 for call ${id} with ${contentType || 'no Content-Type'} instead of audio; is baseUrl the gateway's URL?`,
          { status: 200, reason: 'Unexpected Content-Type', request, callId: id },
        );
      }
      const bytes = await this.#writeAtomically(response, target, request, id, deadline);
      return { path: target, bytes, etag: response.headers.get('etag') ?? undefined };
    } finally {
      deadline.dispose();
    }
  }

  /**
   * Asks the gateway for a signed URL to put in `<audio src>`: it plays without
   * an API key until `expiresAt`. To mint one without a request, see
   * `signRecordingUrl`.
   */
  async createSignedUrl(callId: number | string, options: CreateSignedUrlOptions = {}): Promise<SignedRecordingUrl> {
    const id = canonicalCallId(callId);
    const { ttlSeconds, kid } = options;
    if (ttlSeconds !== undefined && (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1)) {
      throw new RangeError(`ttlSeconds must be a whole number of seconds from 1, got ${describeValue(ttlSeconds)}`);
    }
    if (kid !== undefined && (typeof kid !== 'string' || kid === '')) {
      throw new TypeError(`kid must be a non-empty string, a signing key id of the tenant, got ${describeValue(kid)}`);
    }
    const request = this.#request('POST', `/v1/call/recording/${id}/signed-url`);
    const deadline = startDeadline(this.timeoutMs);
    try {
      const response = await this.#send(request, id, deadline, {
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({
          ...(ttlSeconds === undefined ? {} : { ttl_seconds: ttlSeconds }),
          ...(kid === undefined ? {} : { kid }),
        }),
      });
      if (response.status !== 200) throw await this.#answerError(response, request, id);
      let body: unknown;
      try {
        body = await response.json();
      } catch (error) {
        throw this.#transportError(error, request, id, deadline, 'reading the signed URL');
      }
      const { url, expires_at: expiresAt } = (body ?? {}) as { url?: unknown; expires_at?: unknown };
      if (typeof url !== 'string' || url === '' || typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt)) {
        throw new RecordingGatewayError(`Recording gateway answered call ${id}'s signed URL without {"url", "expires_at"}`, {
          status: response.status,
          reason: 'Unexpected Response',
          request,
          callId: id,
        });
      }
      if (kid !== undefined && signedWith(url, this.baseUrl) !== kid) {
        throw new RecordingGatewayError(
          `Recording gateway signed call ${id}'s URL with a key other than kid ${describeValue(kid)}; is it older than the kid option?`,
          { status: response.status, reason: 'Unexpected Response', request, callId: id },
        );
      }
      return { url, expiresAt };
    } finally {
      deadline.dispose();
    }
  }

  /** Removes the gateway's cached copy of a recording (every tier of this tenant's cache); the next download refetches it. */
  async deleteCallRecording(callId: number | string): Promise<void> {
    const id = canonicalCallId(callId);
    const request = this.#request('DELETE', `/v1/call/recording/${id}.mp3`);
    const deadline = startDeadline(this.timeoutMs);
    try {
      const response = await this.#send(request, id, deadline, {});
      if (response.status < 200 || response.status > 299) throw await this.#answerError(response, request, id);
      await response.body?.cancel().catch(() => {});
    } finally {
      deadline.dispose();
    }
  }

  #request(method: string, pathname: string): RecordingGatewayRequest {
    return { method, url: `${this.baseUrl}${pathname}` };
  }

  async #send(request: RecordingGatewayRequest, callId: string, deadline: Deadline, init: RequestInit): Promise<Response> {
    try {
      return await this.#fetch(request.url, {
        ...init,
        method: request.method,
        headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${this.#apiKey}` },
        // A redirect would take the key to wherever it points; the gateway never sends one.
        redirect: 'manual',
        signal: deadline.signal,
      });
    } catch (error) {
      throw this.#transportError(error, request, callId, deadline, 'waiting for its answer');
    }
  }

  /** The error for a non-success answer, from the contract's JSON `{"error", "message"}` when it is one. */
  async #answerError(response: Response, request: RecordingGatewayRequest, callId: string): Promise<RecordingGatewayError> {
    const { status } = response;
    const options = {
      status,
      request,
      callId,
      retryAfterSeconds: parseRetryAfter(response.headers.get('retry-after')),
    };
    if (status >= 300 && status < 400) {
      await response.body?.cancel().catch(() => {});
      const location = this.#scrub(response.headers.get('location') ?? 'nowhere');
      return new RecordingGatewayError(
        `Recording gateway answered ${status} for call ${callId}, a redirect to ${location}; redirects are not followed so the API key never reaches another host: set baseUrl to the gateway's own URL`,
        { ...options, reason: STATUS_CODES[status] ?? 'Redirect' },
      );
    }
    const text = this.#scrub(await readTextCapped(response, ERROR_BODY_MAX_BYTES).catch(() => ''));
    const fallbackReason = response.statusText || STATUS_CODES[status] || 'Error';
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const { error, message } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
    if (typeof error === 'string' && typeof message === 'string') {
      return new RecordingGatewayError(`Recording gateway answered ${status} ${error} for call ${callId}: ${message}`, {
        ...options,
        reason: error,
        gatewayMessage: message,
      });
    }
    const snippet = text.replace(/\s+/g, ' ').trim().slice(0, ERROR_SNIPPET_CHARS);
    const contentType = response.headers.get('content-type') ?? 'no Content-Type';
    return new RecordingGatewayError(
      `Recording gateway answered ${status} ${fallbackReason} for call ${callId}, with ${contentType} rather than the gateway's JSON error` +
        (snippet ? `: ${snippet}` : ' and an empty body'),
      { ...options, reason: fallbackReason },
    );
  }

  /** No usable answer: this client's timeout, or a network failure. */
  #transportError(
    error: unknown,
    request: RecordingGatewayRequest,
    callId: string,
    deadline: Deadline,
    during: string,
  ): RecordingGatewayError {
    if (deadline.expired) {
      return new RecordingGatewayTimeoutError(
        `Recording gateway did not answer within ${this.timeoutMs} ms while ${during} (${request.method} call ${callId})`,
        { request, callId, timeoutMs: this.timeoutMs, cause: error },
      );
    }
    return new RecordingGatewayError(
      `Could not reach the recording gateway at ${this.baseUrl} for call ${callId} while ${during}: ${this.#scrub(networkReason(error))}`,
      { status: 0, reason: 'Network Error', request, callId, cause: error },
    );
  }

  /** Streams the body to a temporary file beside `target`, verifies, fsyncs and renames it; on any failure removes it. */
  async #writeAtomically(
    response: Response,
    target: string,
    request: RecordingGatewayRequest,
    callId: string,
    deadline: Deadline,
  ): Promise<number> {
    const expected = declaredLength(response);
    const dir = path.dirname(target);
    // Like `mkdir -p`; only after a 200, so an error answer leaves no empty folder behind.
    const firstCreated = await mkdir(dir, { recursive: true });
    const temp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.part`);
    let received = 0;
    let writeError: unknown;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
        received += chunk.length;
        deadline.touch();
        callback(null, chunk);
      },
    });
    const incomplete = (cause: unknown) =>
      new IncompleteDownloadError(
        `The download of call ${callId} broke off after ${received}${expected === undefined ? '' : ` of ${expected}`} bytes; nothing was written to ${target}`,
        { request, callId, receivedBytes: received, expectedBytes: expected, cause },
      );
    try {
      const sink = createWriteStream(temp, { flags: 'wx' });
      sink.once('error', (error) => {
        writeError = error;
      });
      const body = response.body ?? new Response(new Uint8Array(0)).body!;
      try {
        await pipeline(Readable.fromWeb(body as NodeReadableStream<Uint8Array>), meter, sink);
      } catch (error) {
        // The disk's own error (ENOSPC, ENOENT) says more than "the download broke".
        if (writeError !== undefined) throw writeError;
        if (deadline.expired) {
          throw new RecordingGatewayTimeoutError(
            `The download of call ${callId} stalled: no bytes for ${this.timeoutMs} ms after ${received}${expected === undefined ? '' : ` of ${expected}`} bytes; nothing was written to ${target}`,
            { request, callId, timeoutMs: this.timeoutMs, cause: error },
          );
        }
        throw incomplete(error);
      }
      if (expected !== undefined && received !== expected) throw incomplete(undefined);
      await fsyncFile(temp);
      await rename(temp, target);
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    }
    await fsyncDirectory(dir);
    if (firstCreated !== undefined) await fsyncCreatedFolders(dir, firstCreated);
    return received;
  }

  /** Belt and braces: no text from an answer or a cause may carry the key into a message. */
  #scrub(text: string): string {
    return text.split(this.#apiKey).join('[redacted]');
  }
}

/** undici's "fetch failed" hides the useful part (ECONNREFUSED, ENOTFOUND) in its cause. */
function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code ? `${code} (${cause.message})` : cause.message;
  }
  return error.message;
}
