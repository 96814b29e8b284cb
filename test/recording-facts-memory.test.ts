/**
 * What decoding recordings (for their peaks) leaves in memory: nothing.
 * mpg123-decoder's WebAssembly memory, about 17 MB per decoder, is returned
 * once each decode is done, the first decoder's included. Alone in its file:
 * the first decoder of the process is the one at stake.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect, test } from 'vitest';
import { loadFixtureRecordings } from '../dev/fake-flyflow.js';
import { analyseMp3 } from '../src/recordings/analysis/mp3-analysis.js';
import { loadMpegDecoder } from '../src/recordings/analysis/mpeg-decoder.js';
import { bodySource } from '../src/recordings/analysis/stored-recording-source.js';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** Memory outside the JS heap (WebAssembly memories, buffers) once everything unreachable is collected. */
async function externalBytes(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await sleep(50);
  }
  return process.memoryUsage().external;
}

test('decoding leaves no WebAssembly memory behind, the first decode included', async () => {
  const mp3 = (await loadFixtureRecordings()).get(4)!;
  await loadMpegDecoder(); // the library's code is not what is measured
  const before = await externalBytes();
  for (let i = 0; i < 3; i++) {
    const { peaks } = await analyseMp3(bodySource(mp3));
    expect(peaks.totalSamples / peaks.sampleRate).toBeCloseTo(30.9, 0);
  }
  const after = await externalBytes();
  // One decoder kept would be about 17 MB.
  expect(after - before).toBeLessThan(6 * 1024 * 1024);
});
