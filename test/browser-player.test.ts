/**
 * `npm run demo` end to end in a real browser: the player page, on its own
 * origin, plays and seeks a recording through a signed URL, and a tampered
 * signature is refused. Needs Chromium (Debian's at /usr/bin/chromium, or
 * CHROMIUM_PATH); without it this test fails rather than skips, since a
 * skipped browser test would hide a broken player.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemo, type Demo } from '../scripts/demo.js';
import { loadFixtureCatalog } from '../dev/fake-flyflow.js';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const LONG_CALL_ID = 4;
const AUDIO = `[data-testid="audio-${LONG_CALL_ID}"]`;

interface SeenResponse {
  url: string;
  status: number;
  headers: Record<string, string>;
}

describe('demo player in a real browser', () => {
  let demo: Demo | undefined;
  let browser: Browser | undefined;
  let page: Page;
  const responses: SeenResponse[] = [];
  const authorizationHeaders: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(
        `Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install chromium) or set CHROMIUM_PATH. ` +
          'This test fails instead of skipping so that CI never passes without a browser.',
      );
    }
    demo = await startDemo({ gatewayPort: 0, playerPort: 0, upstreamPort: 0, quiet: true });
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage();
    page.on('request', (request) => {
      const authorization = request.headers().authorization;
      if (authorization !== undefined) authorizationHeaders.push(authorization);
    });
    page.on('response', (response) => {
      responses.push({ url: response.url(), status: response.status(), headers: response.headers() });
    });
  }, 30_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await demo?.stop();
  }, 30_000);

  it('plays a recording through a signed URL, seeks near its end with a 206, and refuses a tampered signature', async () => {
    const running = demo!;
    const catalog = await loadFixtureCatalog();
    const expected = catalog.find((r) => r.id === LONG_CALL_ID)!.duration_seconds;

    await page.goto(running.playerUrl);
    await page.waitForSelector(AUDIO, { state: 'attached', timeout: 10_000 });
    const titles = await page.locator('[data-testid="recording"] .title').allTextContents();
    expect(titles).toEqual(catalog.map((r) => r.title));

    // The page's own origin is not the gateway's: the browser reaches it only through signed URLs.
    const signedUrl = await page.locator(AUDIO).evaluate((audio: HTMLAudioElement) => audio.currentSrc || audio.src);
    expect(new URL(running.playerUrl).origin).not.toBe(new URL(running.gatewayUrl).origin);
    expect(signedUrl.startsWith(`${running.gatewayUrl}/v1/call/recording/${LONG_CALL_ID}.mp3?`)).toBe(true);
    expect(new URL(signedUrl).searchParams.get('sig')).toBeTruthy();

    await page.waitForFunction((selector) => document.querySelector<HTMLAudioElement>(selector)!.readyState >= 1, AUDIO, {
      timeout: 10_000,
    });
    const duration = await page.locator(AUDIO).evaluate((audio: HTMLAudioElement) => audio.duration);
    expect(Math.abs(duration - expected)).toBeLessThan(0.5);

    const seekPoint = duration - 3;
    await page.locator(AUDIO).evaluate(async (audio: HTMLAudioElement, at: number) => {
      audio.currentTime = at;
      await audio.play();
    }, seekPoint);
    await page.waitForFunction(
      ([selector, at]) => document.querySelector<HTMLAudioElement>(selector as string)!.currentTime > (at as number) + 0.25,
      [AUDIO, seekPoint] as const,
      { timeout: 10_000, polling: 100 },
    );

    // Media elements ask for ranges (`bytes=0-`, then from the seek point), and the gateway answers 206.
    const recordingPath = `${running.gatewayUrl}/v1/call/recording/${LONG_CALL_ID}.mp3?`;
    const partial = responses.filter((r) => r.url.startsWith(recordingPath) && r.status === 206);
    expect(partial.length).toBeGreaterThan(0);
    expect(partial[0]!.headers['content-range']).toMatch(/^bytes \d+-\d+\/\d+$/);
    // crossorigin="anonymous": the gateway must grant the player's origin, or the browser drops the audio.
    expect(partial[0]!.headers['access-control-allow-origin']).toBe(new URL(running.playerUrl).origin);
    // The tenant key stays in the demo backend.
    expect(authorizationHeaders).toEqual([]);
    expect(await page.content()).not.toContain(running.tenantKey);

    const tampered = tamperSignature(signedUrl);
    const refused = page.waitForResponse((response) => response.url() === tampered, { timeout: 10_000 });
    const errorCode = await page.evaluate(async (src: string) => {
      const audio = document.createElement('audio');
      audio.preload = 'metadata';
      // As the page's own players do. Without CORS the browser's opaque-response
      // blocking (ORB) would swallow the JSON 401 before anyone could see its status.
      audio.crossOrigin = 'anonymous';
      document.body.append(audio);
      const code = await new Promise<number | null>((resolve) => {
        audio.addEventListener('error', () => resolve(audio.error?.code ?? null), { once: true });
        audio.addEventListener('loadedmetadata', () => resolve(null), { once: true });
        audio.src = src;
      });
      audio.remove();
      return code;
    }, tampered);
    expect([MediaErrorCode.NETWORK, MediaErrorCode.SRC_NOT_SUPPORTED]).toContain(errorCode);
    expect((await refused).status()).toBe(401);
  }, 60_000);

  it("does not answer a request with another API key from the browser's cache of an answer to the right one", async () => {
    const running = demo!;
    await page.goto(running.playerUrl);
    const statuses = await page.evaluate(
      async ([url, key]) => {
        const right = await fetch(url as string, { headers: { Authorization: `Bearer ${key}` } });
        await right.arrayBuffer();
        // A revoked or mistyped key: the browser holds a fresh answer for this URL, but not for this key.
        const wrong = await fetch(url as string, { headers: { Authorization: 'Bearer demo_not-a-valid-key' } });
        await wrong.arrayBuffer();
        return [right.status, wrong.status];
      },
      [`${running.gatewayUrl}/v1/call/recording/1.mp3`, running.tenantKey] as const,
    );
    expect(statuses).toEqual([200, 401]);
  }, 30_000);

  it("draws each recording's waveform from peaks.json through its signed URL, and seeks where it is clicked", async () => {
    const running = demo!;
    const catalog = await loadFixtureCatalog();
    responses.length = 0;
    await page.goto(running.playerUrl);
    for (const { id } of catalog) {
      await page.waitForSelector(`[data-testid="waveform-${id}"][data-state="ready"]`, { timeout: 15_000 });
    }
    const WAVEFORM = `[data-testid="waveform-${LONG_CALL_ID}"]`;
    // Drawn: a good share of the canvas's pixels are painted, and not one flat colour band.
    const painted = await page.locator(WAVEFORM).evaluate((canvas: HTMLCanvasElement) => {
      const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
      let count = 0;
      const columns = new Set<number>();
      for (let i = 3; i < data.length; i += 4) {
        if (data[i]! > 0) {
          count++;
          columns.add(((i - 3) / 4) % canvas.width);
        }
      }
      return { share: count / (canvas.width * canvas.height), columns: columns.size / canvas.width };
    });
    expect(painted.share).toBeGreaterThan(0.05);
    expect(painted.share).toBeLessThan(0.95);
    expect(painted.columns).toBeGreaterThan(0.5);

    const peaksPath = `${running.gatewayUrl}/v1/call/recording/${LONG_CALL_ID}/peaks.json?`;
    const peaksAnswer = responses.find((r) => r.url.startsWith(peaksPath));
    expect(peaksAnswer?.status).toBe(200);
    expect(new URL(peaksAnswer!.url).searchParams.get('sig')).toBeTruthy();
    expect(peaksAnswer!.headers['access-control-allow-origin']).toBe(new URL(running.playerUrl).origin);

    await page.waitForFunction((selector) => document.querySelector<HTMLAudioElement>(selector)!.readyState >= 1, AUDIO, {
      timeout: 10_000,
    });
    const duration = await page.locator(AUDIO).evaluate((audio: HTMLAudioElement) => audio.duration);
    const box = (await page.locator(WAVEFORM).boundingBox())!;
    await page.locator(WAVEFORM).click({ position: { x: box.width * 0.75, y: box.height / 2 } });
    await page.waitForFunction(
      ([selector, at]) => document.querySelector<HTMLAudioElement>(selector as string)!.currentTime >= (at as number),
      [AUDIO, duration * 0.7] as const,
      { timeout: 10_000, polling: 100 },
    );
    const seekedTo = await page.locator(AUDIO).evaluate((audio: HTMLAudioElement) => audio.currentTime);
    expect(seekedTo / duration).toBeGreaterThan(0.7);
    expect(seekedTo / duration).toBeLessThan(0.95);
  }, 60_000);
});

/** MediaError codes (the DOM constants are not available in Node). */
const MediaErrorCode = { NETWORK: 2, SRC_NOT_SUPPORTED: 4 } as const;

/** The same URL with one character of `sig` changed. */
function tamperSignature(url: string): string {
  const parsed = new URL(url);
  const sig = parsed.searchParams.get('sig')!;
  const first = sig[0] === 'A' ? 'B' : 'A';
  parsed.searchParams.set('sig', `${first}${sig.slice(1)}`);
  return parsed.href;
}
