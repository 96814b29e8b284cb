import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_DIR, FIXTURE_LAST_MODIFIED, loadFixtureCatalog, loadFixtureRecordings, startFakeFlyflow } from '../dev/fake-flyflow.js';
import type { FakeFlyflow } from '../dev/fake-flyflow.js';

function isMp3(bytes: Uint8Array): boolean {
  const id3 = bytes[0] === 0x49 && bytes[1] === 0x44 && bytes[2] === 0x33;
  const frameSync = bytes[0] === 0xff && ((bytes[1] ?? 0) & 0xe0) === 0xe0;
  return id3 || frameSync;
}

async function body(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}

describe('fixtures', () => {
  it('lists four real MP3 recordings, some ID3-tagged and some bare, one long enough to seek in', async () => {
    const catalog = await loadFixtureCatalog();
    expect(catalog.map((r) => r.id)).toEqual([1, 2, 3, 4]);
    let tagged = 0;
    let bare = 0;
    let total = 0;
    for (const entry of catalog) {
      const bytes = await readFile(join(FIXTURE_DIR, entry.file));
      total += bytes.length;
      expect(isMp3(bytes), entry.file).toBe(true);
      if (bytes.subarray(0, 3).toString('latin1') === 'ID3') tagged++;
      else bare++;
      expect(entry.title.length).toBeGreaterThan(0);
      if (entry.id === 4) expect(entry.duration_seconds).toBeGreaterThanOrEqual(25);
      else expect(entry.duration_seconds).toBeGreaterThanOrEqual(3);
      expect(entry.duration_seconds).toBeLessThanOrEqual(entry.id === 4 ? 35 : 8);
    }
    expect(tagged).toBeGreaterThan(0);
    expect(bare).toBeGreaterThan(0);
    expect(total).toBeLessThan(400 * 1024);
  });
});

describe('fake Flyflow', () => {
  let fake: FakeFlyflow;
  let fixtures: Map<number, Buffer>;
  const url = (id: number | string) => `${fake.baseUrl}/call/recording/${id}.mp3`;

  beforeAll(async () => {
    fixtures = await loadFixtureRecordings();
    fake = await startFakeFlyflow();
  });
  afterEach(() => fake.reset());
  afterAll(() => fake.close());

  it('serves the exact fixture bytes as audio/mpeg with Content-Length and Last-Modified', async () => {
    for (const [id, expected] of fixtures) {
      const response = await fetch(url(id));
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('audio/mpeg');
      expect(response.headers.get('content-length')).toBe(String(expected.length));
      expect(response.headers.get('last-modified')).toBe(FIXTURE_LAST_MODIFIED);
      const bytes = await body(response);
      expect(bytes.equals(expected)).toBe(true);
      expect(isMp3(bytes)).toBe(true);
    }
  });

  it('records every request with its path, query, headers and call ID', async () => {
    await body(await fetch(`${url(2)}?x=1`, { headers: { authorization: 'Bearer k', accept: 'audio/mpeg' } }));
    await body(await fetch(`${fake.origin}/elsewhere`));
    expect(fake.requests).toHaveLength(2);
    const [first] = fake.recordingRequests(2);
    expect(first).toMatchObject({ method: 'GET', url: '/v1/call/recording/2.mp3?x=1', id: 2 });
    expect(first?.headers.authorization).toBe('Bearer k');
    expect(fake.recordingRequests()).toHaveLength(1);
    expect(fake.recordingRequests(1)).toHaveLength(0);
  });

  it('answers JSON errors for unknown IDs, other paths and non-integer IDs', async () => {
    const unknown = await fetch(url(999));
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toBe('application/json');
    expect(await unknown.json()).toEqual({ error: 'Not Found', message: 'Recording not found' });

    const elsewhere = await fetch(`${fake.origin}/v1/calls`);
    expect(elsewhere.status).toBe(404);
    expect(await elsewhere.json()).toMatchObject({ error: 'Not Found' });

    const bad = await fetch(url('abc'));
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'Bad Request' });
  });

  it('serves a recording set at run time, even a large one', async () => {
    const huge = Buffer.alloc(8 * 1024 * 1024, 0xaa);
    huge[0] = 0xff;
    huge[1] = 0xf3;
    fake.setRecording(77, huge);
    expect(fake.recording(77)).toBe(huge);
    const bytes = await body(await fetch(url(77)));
    expect(bytes.equals(huge)).toBe(true);
  });

  it("'status' answers the JSON error `times` times, then the recording", async () => {
    fake.setBehaviour(1, { kind: 'status', status: 500, times: 2 });
    for (let i = 0; i < 2; i++) {
      const response = await fetch(url(1));
      expect(response.status).toBe(500);
      expect(await response.json()).toEqual({ error: 'Internal Server Error', message: 'Internal server error' });
    }
    const ok = await fetch(url(1));
    expect(ok.status).toBe(200);
    expect((await body(ok)).equals(fixtures.get(1)!)).toBe(true);
  });

  it("'status' without times keeps failing", async () => {
    fake.setBehaviour(1, { kind: 'status', status: 503 });
    for (let i = 0; i < 3; i++) {
      const response = await fetch(url(1));
      expect(response.status).toBe(503);
      await response.arrayBuffer();
    }
    fake.setBehaviour(1, undefined);
    expect((await fetch(url(1))).status).toBe(200);
  });

  it("'html' answers 200 text/html", async () => {
    fake.setBehaviour(1, { kind: 'html' });
    const response = await fetch(url(1));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await response.text()).toMatch(/^<html>/);
  });

  it("'not-mp3' answers 200 audio/mpeg with bytes that are no MP3", async () => {
    fake.setBehaviour(1, { kind: 'not-mp3' });
    const response = await fetch(url(1));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('audio/mpeg');
    const bytes = await body(response);
    expect(bytes.length).toBeGreaterThan(0);
    expect(isMp3(bytes)).toBe(false);
  });

  it("'slow-head' delays the head", async () => {
    fake.setBehaviour(1, { kind: 'slow-head', delayMs: 300 });
    const started = performance.now();
    const response = await fetch(url(1));
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect((await body(response)).equals(fixtures.get(1)!)).toBe(true);
  });

  it("'slow-body' sends the head at once and the body in throttled chunks", async () => {
    const expected = fixtures.get(2)!;
    const chunkBytes = Math.ceil(expected.length / 4);
    fake.setBehaviour(2, { kind: 'slow-body', chunkBytes, intervalMs: 100 });
    const started = performance.now();
    const response = await fetch(url(2));
    const head = performance.now() - started;
    const bytes = await body(response);
    // Three 100 ms pauses come after the head, however loaded the machine is.
    expect(performance.now() - started - head).toBeGreaterThanOrEqual(250);
    expect(bytes.equals(expected)).toBe(true);
  });

  it("'truncate' declares the full length, then the body fails", async () => {
    fake.setBehaviour(1, { kind: 'truncate', afterBytes: 1000 });
    const response = await fetch(url(1));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe(String(fixtures.get(1)!.length));
    await expect(response.arrayBuffer()).rejects.toThrow();
  });

  it("'truncate' delivers exactly `afterBytes` before the failure", async () => {
    fake.setBehaviour(1, { kind: 'truncate', afterBytes: 1000 });
    const response = await fetch(url(1));
    const reader = response.body!.getReader();
    let received = 0;
    await expect(
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          received += value.length;
        }
      })(),
    ).rejects.toThrow();
    expect(received).toBe(1000);
  });

  it("'reset' fails the body `times` times, then answers normally", async () => {
    fake.setBehaviour(3, { kind: 'reset', afterBytes: 0, times: 1 });
    const broken = await fetch(url(3));
    await expect(broken.arrayBuffer()).rejects.toThrow();
    const ok = await fetch(url(3));
    expect((await body(ok)).equals(fixtures.get(3)!)).toBe(true);
  });

  it("'no-content-length' answers chunked", async () => {
    fake.setBehaviour(1, { kind: 'no-content-length' });
    const response = await fetch(url(1));
    expect(response.headers.get('content-length')).toBeNull();
    expect(response.headers.get('transfer-encoding')).toBe('chunked');
    expect((await body(response)).equals(fixtures.get(1)!)).toBe(true);
  });

  it("'redirect' points at another server, which fetch follows", async () => {
    const storage = await startFakeFlyflow({ recordings: new Map([[1, Buffer.from([0xff, 0xf3, 1, 2, 3])]]) });
    try {
      fake.setBehaviour(1, { kind: 'redirect', location: `${storage.baseUrl}/call/recording/1.mp3?sig=abc` });
      const manual = await fetch(url(1), { redirect: 'manual' });
      expect(manual.status).toBe(302);
      expect(manual.headers.get('location')).toBe(`${storage.baseUrl}/call/recording/1.mp3?sig=abc`);
      await manual.arrayBuffer();

      const followed = await fetch(url(1));
      expect([...(await body(followed))]).toEqual([0xff, 0xf3, 1, 2, 3]);
      expect(storage.recordingRequests(1)[0]?.url).toBe('/v1/call/recording/1.mp3?sig=abc');
    } finally {
      await storage.close();
    }
  });

  it("'redirect' honours another status and can loop back to itself", async () => {
    fake.setBehaviour(1, { kind: 'redirect', location: url(1), status: 307 });
    const manual = await fetch(url(1), { redirect: 'manual' });
    expect(manual.status).toBe(307);
    await manual.arrayBuffer();
    await expect(fetch(url(1))).rejects.toThrow();
  });

  it("'gate' sends a quarter of the body and holds the rest until release", async () => {
    const expected = fixtures.get(4)!;
    fake.setBehaviour(4, { kind: 'gate' });
    const response = await fetch(url(4));
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let received = 0;
    while (received < Math.floor(expected.length / 4)) {
      const { value } = await reader.read();
      received += value!.length;
    }
    expect(received).toBe(Math.floor(expected.length / 4));

    let finished = false;
    const rest = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
      }
      finished = true;
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(finished).toBe(false);

    fake.release(4);
    await rest;
    expect(received).toBe(expected.length);
    // The gate stays open once released.
    expect((await body(await fetch(url(4)))).equals(expected)).toBe(true);
  });

  it('a HEAD gets the head of a recording and no body', async () => {
    const response = await fetch(url(1), { method: 'HEAD' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe(String(fixtures.get(1)!.length));
  });
});

describe('fake Flyflow with API keys', () => {
  let fake: FakeFlyflow;
  const url = () => `${fake.baseUrl}/call/recording/1.mp3`;

  beforeAll(async () => {
    fake = await startFakeFlyflow({ apiKeys: ['server-key'] });
  });
  afterAll(() => fake.close());

  it('accepts a listed Bearer key and refuses others with 401 JSON', async () => {
    expect((await fetch(url(), { headers: { authorization: 'Bearer server-key' } })).status).toBe(200);
    const refused: Record<string, string>[] = [{}, { authorization: 'Bearer wrong' }, { authorization: 'server-key' }];
    for (const headers of refused) {
      const response = await fetch(url(), { headers });
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Invalid API key' });
    }
    expect(fake.recordingRequests(1)).toHaveLength(4);
  });
});

describe('closing the fake Flyflow', () => {
  it('resolves promptly with gated, slow and delayed responses still in flight', async () => {
    const fake = await startFakeFlyflow();
    fake.setBehaviour(1, { kind: 'gate' });
    fake.setBehaviour(2, { kind: 'slow-body', chunkBytes: 10, intervalMs: 1000 });
    fake.setBehaviour(3, { kind: 'slow-head', delayMs: 60_000 });
    const gated = await fetch(`${fake.baseUrl}/call/recording/1.mp3`);
    const slow = await fetch(`${fake.baseUrl}/call/recording/2.mp3`);
    // Settled into a value at once so its rejection is never 'unhandled' while close() runs.
    const delayed = fetch(`${fake.baseUrl}/call/recording/3.mp3`).then(
      () => 'answered',
      () => 'failed',
    );
    await new Promise((resolve) => setTimeout(resolve, 50));

    const started = performance.now();
    await fake.close();
    expect(performance.now() - started).toBeLessThan(5000);
    await expect(gated.arrayBuffer()).rejects.toThrow();
    await expect(slow.arrayBuffer()).rejects.toThrow();
    expect(await delayed).toBe('failed');
  });
});
