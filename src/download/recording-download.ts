import { createHash, type Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TempFile } from '../cache/temp-file.js';
import { type Clock, systemClock } from '../clock.js';
import { BadGatewayError, GatewayError } from '../errors.js';
import { RetryableUpstreamError } from '../upstream/errors.js';
import type { UpstreamRecording } from '../upstream/flyflow-client.js';
import { MP3_SIGNATURE_BYTES, looksLikeMp3 } from '../upstream/mp3-signature.js';
import { GrowingBody, type DownloadSink } from './growing-body.js';

export type { DownloadSink } from './growing-body.js';

/** What a caller needs to start answering: known once the first bytes passed the MP3 check. */
export interface DownloadHead {
  /** The body's length: the upstream's Content-Length, or, without one, the length once complete. */
  size: number;
  contentType: string;
  lastModified: string | undefined;
}

/** Where a download's bytes come from: the upstream, or (in a cluster) another replica's download or copy. */
export type DownloadOrigin = 'upstream' | 'peer-download' | 'peer-copy';

/** An opened source of a recording's bytes: the upstream's answer, or another replica's, with what storing it needs. */
export interface SourcedRecording extends UpstreamRecording {
  origin?: DownloadOrigin;
  /** False when the source's own volume is ours: it stores the file there, so this process must not. */
  persist?: boolean;
  /** The recording's purge generation when this download began (cluster only). */
  generation?: number;
  /** Called once the download has settled and its result is stored (a cluster lease is released here). */
  settle?(): void;
  /** Another replica's stored copy: when that copy was fetched from the upstream, so retention counts from then. */
  fetchedAt?: number | undefined;
  /**
   * Another replica's stored copy: the sha256 the cluster lists for it, which
   * the bytes must have, else nothing is stored (a damaged file must not
   * spread to other volumes), and how to stop listing that copy.
   */
  copyOf?: { sha256: string; withdraw(): void };
}

/** The finished body, handed to whoever stores it. */
export interface CompletedDownload extends DownloadHead {
  origin: DownloadOrigin;
  persist: boolean;
  generation: number | undefined;
  /** Set when the bytes are another replica's stored copy: when it was fetched from the upstream. */
  fetchedAt?: number | undefined;
  sha256: string;
  /** The whole body when it was small enough to keep in memory. */
  body: Buffer | undefined;
  /**
   * The fsynced temporary file holding the whole body, when the disk took it.
   * Whoever stores the download commits it or discards it.
   */
  file: TempFile | undefined;
}

export interface DownloadOptions {
  /** Attempts when the body breaks before any caller got a byte of it; default 3. */
  maxAttempts?: number;
  /**
   * Settles when the download may begin (its download slot): nothing, not even
   * its temporary file, is opened before. A rejection fails the download.
   * Without it the download begins within the constructor.
   */
  ready?: Promise<unknown>;
  /** Told of each upstream answer whose body failed after its head was taken (for the metrics); not of a peer's. */
  onUpstreamBodyFailed?(error: GatewayError): void;
  /** Times `silentFor`; default the system clock. */
  clock?: Clock;
}

const DEFAULT_MAX_ATTEMPTS = 3;
const BODY_RETRY_DELAY_MS = 100;

// What a read of a broken body gets while the body is fetched again: it reads the new one instead.
const FETCHING_AGAIN = new BadGatewayError('Upstream body broke; fetching it again');

interface NextBody {
  promise: Promise<GrowingBody>;
  resolve(body: GrowingBody): void;
  reject(error: unknown): void;
}

function nextBody(): NextBody {
  let resolve!: (body: GrowingBody) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<GrowingBody>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Rejected when the download fails for good, perhaps with no reader waiting.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * Runs `start` once this turn of the event loop is over: the turn in which
 * the upstream's head arrives hands the callers their first bytes too, when
 * they came with it, and opening a file (a thread-pool hand-off whose
 * completion wakes the event loop) must not come before them.
 */
function afterThisTurn<T>(start: () => Promise<T>): Promise<T> {
  return new Promise<void>((resolve) => setImmediate(resolve)).then(start);
}

/**
 * Another replica's stored copy must have the digest the cluster lists for it;
 * one that does not is withdrawn. Retryable: while no caller has a byte of it,
 * the recording is fetched again at once, from the next source.
 */
function checkCopy(source: SourcedRecording, sha256: string): void {
  if (!source.copyOf || sha256 === source.copyOf.sha256) return;
  source.copyOf.withdraw();
  throw new RetryableUpstreamError("Another replica's stored copy does not match its sha256 (a damaged file there); nothing stored");
}

/**
 * One upstream download shared by every caller that wants the same recording.
 * Callers read any offset already received and wait for the rest, so a joiner
 * gets what has landed at once and never waits for the whole file. Nobody's
 * disconnect stops it: the download is driven by the upstream alone. A body
 * that breaks before any caller has a byte of it is fetched again, even once
 * callers have its head (they wait for the whole body, or for bytes further
 * on): they read the new body, which must be as long as the head said.
 */
export class RecordingDownload {
  readonly head: Promise<DownloadHead>;
  /** Settles when the body is complete and verified; rejects with the failure. */
  readonly completed: Promise<CompletedDownload>;

  #body: GrowingBody | undefined;
  /** While a body that callers have the head of is fetched again: the next body, which their reads wait for. */
  #nextBody: NextBody | undefined;
  #origin: DownloadOrigin | undefined;
  /** Settles with the origin once decided, or with undefined when the download fails first. */
  #decided!: (origin: DownloadOrigin | undefined) => void;
  readonly #decision = new Promise<DownloadOrigin | undefined>((resolve) => {
    this.#decided = resolve;
  });
  #headSent: DownloadHead | undefined;
  #state: 'running' | 'complete' | 'failed' = 'running';
  #sha256: string | undefined;
  /** Settles with `#sha256` once it is known, or with undefined when the download fails. */
  #digested!: (sha256: string | undefined) => void;
  readonly #digest = new Promise<string | undefined>((resolve) => {
    this.#digested = resolve;
  });
  #listedSha256: string | undefined;
  #readers = 0;
  #retired = false;
  #brokeWhileRead = false;
  /** Set by `abandon`: the error the download fails with, whatever the source does next. */
  #abandoned: GatewayError | undefined;
  /** The source answering the attempt under way, so that `abandon` can stop it. */
  #source: SourcedRecording | undefined;
  /** When the source last answered or sent bytes. */
  #heardAt = 0;
  readonly #clock: Clock;
  #resolveHead!: (head: DownloadHead) => void;
  #rejectHead!: (error: unknown) => void;

  constructor(
    open: (goingUpstream: () => void) => Promise<SourcedRecording>,
    private readonly sink: DownloadSink,
    private readonly options: DownloadOptions = {},
  ) {
    this.#clock = options.clock ?? systemClock;
    this.head = new Promise<DownloadHead>((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
    this.head.catch(() => {});
    this.completed = this.#run(open);
    this.completed.catch(() => this.#decided(undefined));
  }

  get state(): 'running' | 'complete' | 'failed' {
    return this.#state;
  }

  /**
   * Where the bytes come from: `upstream` as soon as the source decided to ask
   * it, else known once the head is; undefined while the source is still
   * choosing (in a cluster, it may be about to stream another replica's).
   */
  get origin(): DownloadOrigin | undefined {
    return this.#origin;
  }

  /**
   * The origin once the source has decided it, waiting at most `ms`: undefined
   * when it has not by then, or the download failed first. Another replica
   * asking for this download waits here for the moments a lease takes to be
   * held; two replicas each choosing while asking the other wait no longer.
   */
  originWithin(ms: number): Promise<DownloadOrigin | undefined> {
    if (this.#origin !== undefined) return Promise.resolve(this.#origin);
    return Promise.race([this.#decision, sleep(ms, undefined, { ref: false })]);
  }

  /**
   * The whole body's sha256 once every byte is in and checked (it may still
   * be being made durable and stored); for another volume's stored copy, at
   * once: the digest the cluster lists for it. Else undefined.
   */
  get sha256(): string | undefined {
    return this.#sha256 ?? this.#listedSha256;
  }

  /**
   * `sha256`, or, when every byte is in but the digest is not published yet
   * (the last chunk still being written, the upstream's end not yet read),
   * a promise of it, which settles moments later (with undefined if the
   * download fails). Undefined while bytes are still to come: a caller
   * joining then streams them without waiting for the digest.
   */
  digestOnceReceived(): string | undefined | Promise<string | undefined> {
    const known = this.sha256;
    if (known !== undefined || this.#state !== 'running') return known;
    const size = this.#headSent?.size;
    return size !== undefined && this.#body?.received === size ? this.#digest : undefined;
  }

  /**
   * True when the body broke after a reader had bytes of it, so it was not
   * fetched again: a caller that had none may start a new download.
   */
  get brokeWhileRead(): boolean {
    return this.#brokeWhileRead;
  }

  /**
   * How long the source has sent nothing while bytes are still due: since its
   * answer or its last chunk. 0 while no source is open (before the first
   * answer, while a broken body is fetched again) and once every byte is in.
   */
  get silentFor(): number {
    const body = this.#body;
    if (this.#state !== 'running' || !body || body.received === this.#headSent?.size) return 0;
    return Math.max(0, this.#clock.now() - this.#heardAt);
  }

  /** Bytes received so far (for progress displays). */
  get received(): number {
    return this.#body?.received ?? 0;
  }

  /** Up to `maxBytes` bytes at `offset`, waiting until they arrive; null at the end. Only after `head`. `scratch` as for GrowingBody.readAt. */
  async readAt(offset: number, maxBytes: number, scratch?: Buffer): Promise<Uint8Array | null> {
    for (;;) {
      const body = this.#body ?? (await this.#nextBody!.promise);
      try {
        return await body.readAt(offset, maxBytes, scratch);
      } catch (error) {
        if (error !== FETCHING_AGAIN) throw error;
      }
    }
  }

  /**
   * Stops a download still receiving (shutdown, once its grace period is
   * over): the source's transfer is cancelled, and the download fails with
   * `error` instead of completing, so nothing of it is stored and its
   * temporary file is removed. A request for the source still pending is the
   * caller's to abort (the signal it gave `open`). False, and nothing done,
   * once every byte is in: that download completes and is stored.
   */
  abandon(error: GatewayError): boolean {
    if (this.#state !== 'running' || this.#sha256 !== undefined || this.#abandoned) return false;
    this.#abandoned = error;
    this.#source?.cancel();
    return true;
  }

  /** True once `abandon` stopped it. */
  get abandoned(): boolean {
    return this.#abandoned !== undefined;
  }

  /** Marks a reader, so that the temporary file stays open until the last one is done. */
  acquire(): () => void {
    this.#readers++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#readers--;
      void this.#closeIfUnused();
    };
  }

  /**
   * No new reader can join any more (the download left the registry); the
   * file closes after the last. Resolves once it is closed, if nobody reads.
   */
  retire(): Promise<void> {
    this.#retired = true;
    return this.#closeIfUnused();
  }

  async #run(open: (goingUpstream: () => void) => Promise<SourcedRecording>): Promise<CompletedDownload> {
    const maxAttempts = this.options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      let upstream: SourcedRecording | undefined;
      try {
        // Abandoned while a broken body waited to be fetched again.
        if (this.#abandoned) throw this.#abandoned;
        if (this.options.ready) await this.options.ready;
        upstream = await open(() => {
          this.#origin = 'upstream';
          this.#decided('upstream');
        });
        this.#source = upstream;
        // Abandoned while the source was answering: the answer is cancelled below.
        if (this.#abandoned) throw this.#abandoned;
        const sent = this.#headSent;
        if (sent && (upstream.contentLength !== sent.size || upstream.contentType !== sent.contentType)) {
          throw new BadGatewayError('Upstream answered differently when its broken body was fetched again');
        }
        this.#origin = upstream.origin ?? 'upstream';
        this.#decided(this.#origin);
        this.#listedSha256 = upstream.copyOf?.sha256;
        this.#heardAt = this.#clock.now();
        // Opened once the source has answered, not while it answers: on
        // loopback that open (a thread-pool job whose completion wakes the
        // event loop) fell just as the head came in, and delayed a cold miss's
        // first byte by 0.33 ms; and a refused answer (a 404, a 503) opens none.
        this.#body = GrowingBody.create(
          this.sink,
          upstream.contentLength,
          afterThisTurn(() => this.sink.createTemp()),
        );
        this.#nextBody?.resolve(this.#body);
        this.#nextBody = undefined;
        const result = await this.#receive(upstream, this.#body);
        this.#state = 'complete';
        return result;
      } catch (caught) {
        upstream?.cancel();
        this.#source = undefined;
        // An abandoned download fails with the shutdown's error, not with what cancelling its source caused.
        const error =
          this.#abandoned ?? (caught instanceof GatewayError ? caught : new BadGatewayError('Download failed', { cause: caught }));
        if (upstream !== undefined && this.#origin === 'upstream' && !this.#abandoned) this.options.onUpstreamBodyFailed?.(error);
        const broken = this.#body;
        // Only a body that broke is fetched again: open() has already retried
        // the request itself, with backoff, within the upstream timeout.
        if (
          upstream !== undefined &&
          !this.#abandoned &&
          !broken?.handedOut &&
          attempt < maxAttempts &&
          error instanceof RetryableUpstreamError
        ) {
          this.#body = undefined;
          if (this.#headSent) this.#nextBody ??= nextBody();
          broken?.fail(FETCHING_AGAIN);
          // Nobody has had a byte of the broken body: close its file now.
          await broken?.close();
          await sleep(BODY_RETRY_DELAY_MS * attempt);
          continue;
        }
        broken?.fail(error);
        this.#brokeWhileRead = broken?.handedOut === true && error instanceof RetryableUpstreamError;
        this.#nextBody?.reject(error);
        this.#state = 'failed';
        this.#digested(undefined);
        this.#rejectHead(error);
        void this.#closeIfUnused();
        throw error;
      }
    }
  }

  async #receive(upstream: SourcedRecording, body: GrowingBody): Promise<CompletedDownload> {
    // Made at its first update, once the first chunk is in the callers' hands: a cold miss's first byte does not wait for it.
    let hash: Hash | undefined;
    let sha256: string | undefined;
    let signature = Buffer.alloc(0);
    const head = () => ({
      size: upstream.contentLength ?? body.received,
      contentType: upstream.contentType,
      lastModified: upstream.lastModified,
    });
    for await (const piece of upstream.chunks()) {
      this.#heardAt = this.#clock.now();
      const chunk = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      if (signature.length < MP3_SIGNATURE_BYTES) {
        signature = Buffer.concat([signature, chunk.subarray(0, MP3_SIGNATURE_BYTES - signature.length)]);
        if (signature.length >= MP3_SIGNATURE_BYTES && !looksLikeMp3(signature)) {
          throw new BadGatewayError('Upstream answered with a body that is not MP3 audio');
        }
      }
      // A stored copy's last bytes wait for its digest: a damaged copy never reaches a client whole.
      const last = upstream.copyOf !== undefined && body.received + chunk.length === upstream.contentLength;
      if (last) {
        hash ??= createHash('sha256');
        sha256 = hash.update(chunk).digest('hex');
        checkCopy(upstream, sha256);
      }
      // append() takes the chunk into memory before it waits on the disk, so
      // callers can start while the write is still under way.
      const appended = body.append(chunk);
      // Callers may start once the body is known to be audio and its length is known.
      if (!this.#headSent && signature.length >= MP3_SIGNATURE_BYTES && upstream.contentLength !== undefined) {
        this.#headSent = head();
        this.#resolveHead(this.#headSent);
      }
      await appended;
      if (last) continue;
      // Hashed once callers have had the chunk: the digest is needed only at the end.
      hash ??= createHash('sha256');
      hash.update(chunk);
    }
    // Abandoned as the last bytes came in: a download counted as abandoned is never stored.
    if (this.#abandoned) throw this.#abandoned;
    if (upstream.contentLength !== undefined && body.received !== upstream.contentLength) {
      throw new BadGatewayError('Upstream body ended before its Content-Length');
    }
    // A body long enough for the signature has had a chunk, so its hash exists.
    if (signature.length < MP3_SIGNATURE_BYTES || !hash) throw new BadGatewayError('Upstream answered with a body that is not MP3 audio');
    sha256 ??= hash.digest('hex');
    checkCopy(upstream, sha256);
    // Published before the fsync and the store: a caller joining now has every byte, so it gets the ETag.
    this.#sha256 = sha256;
    this.#digested(sha256);
    const sealed = await body.seal();
    this.#headSent ??= head();
    this.#resolveHead(this.#headSent);
    return {
      ...head(),
      sha256,
      ...sealed,
      origin: upstream.origin ?? 'upstream',
      persist: upstream.persist !== false,
      generation: upstream.generation,
      ...(upstream.fetchedAt === undefined ? {} : { fetchedAt: upstream.fetchedAt }),
    };
  }

  async #closeIfUnused(): Promise<void> {
    if (this.#state === 'running' || this.#readers > 0 || !this.#retired) return;
    await this.#body?.close();
  }
}
