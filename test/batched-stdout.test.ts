import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BatchedStdout } from '../src/batched-stdout.js';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';

let dir: string;

beforeEach(async () => {
  dir = await makeTempDir();
});

afterEach(async () => {
  await removeDir(dir);
});

describe('BatchedStdout', () => {
  it('holds lines until a batch has gathered, then writes them in order, multi-byte characters whole', () => {
    const file = path.join(dir, 'out.log');
    const fd = openSync(file, 'w');
    try {
      const out = new BatchedStdout(fd, 100);
      const lines = ['{"n":1,"path":"/é"}\n', '{"n":2}\n', '{"n":3}\n'];
      for (const line of lines) out.write(line);
      expect(readFileSync(file, 'utf8')).toBe('');
      const long = `{"n":4,"pad":"${'x'.repeat(80)}"}\n`;
      out.write(long);
      expect(readFileSync(file, 'utf8')).toBe([...lines, long].join(''));
      out.write('{"n":5}\n');
      let flushed = false;
      out.flush(() => {
        flushed = true;
      });
      expect(flushed).toBe(true);
      expect(readFileSync(file, 'utf8')).toBe([...lines, long, '{"n":5}\n'].join(''));
    } finally {
      closeSync(fd);
    }
  });

  it('drops what it cannot write to a closed descriptor instead of throwing', () => {
    const fd = openSync(path.join(dir, 'closed.log'), 'w');
    closeSync(fd);
    const out = new BatchedStdout(fd, 10);
    expect(() => out.write('{"a line longer than the batch":true}\n')).not.toThrow();
    expect(() => out.flush()).not.toThrow();
  });
});

describe("the gateway's stdout", () => {
  // A real process: request lines wait for a batch, any other line takes them out with it at once, and exit writes what is left.
  it('writes any other line at once with the request lines before it, and the last ones at exit', () => {
    const script = `
      import { writeSync } from 'node:fs';
      import { createLogger, infoLineWriter, REQUEST_LINE } from './src/logger.ts';
      const logger = createLogger({ level: 'info' });
      const writeLine = infoLineWriter(logger);
      writeLine('"reqId":"first"', REQUEST_LINE);
      writeLine('"reqId":"second"', REQUEST_LINE);
      logger.warn('something happened');
      writeSync(1, '{"msg":"written straight to fd 1","level":0}\\n');
      writeLine('"reqId":"third"', REQUEST_LINE);
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: path.resolve(import.meta.dirname, '..'),
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(child.status, child.stderr).toBe(0);
    const lines = child.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { msg: string; reqId?: string; level: number });
    expect(lines.map((line) => line.reqId ?? line.msg)).toEqual([
      'first',
      'second',
      'something happened',
      'written straight to fd 1',
      'third',
    ]);
    expect(lines.map((line) => line.level)).toEqual([30, 30, 40, 0, 30]);
  });
});
