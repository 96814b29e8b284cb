import { execFileSync, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
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

  it('takes a line its writer knows to be ASCII as it is, in order with the others', () => {
    const file = path.join(dir, 'out.log');
    const fd = openSync(file, 'w');
    try {
      const out = new BatchedStdout(fd, 1024);
      const lines = ['{"n":1,"path":"/é…"}\n', `{"n":2,"id":"${'a'.repeat(20)}"}\n`, '{"n":3}\n'];
      out.write(lines[0]!);
      out.writeAscii(lines[1]!);
      out.write(lines[2]!);
      out.writeAscii(`{"n":4,"pad":"${'x'.repeat(2000)}"}\n`);
      out.flush();
      expect(readFileSync(file, 'utf8')).toBe(`${lines.join('')}{"n":4,"pad":"${'x'.repeat(2000)}"}\n`);
    } finally {
      closeSync(fd);
    }
  });

  // A real FIFO, both ends non-blocking, as Node leaves a pipe on stdout: the test reads when it chooses.
  it('never blocks on a reader that stopped: lines wait up to the bound, newer ones are dropped and counted where they are missing', async () => {
    const fifo = path.join(dir, 'stdout.fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    const received: Buffer[] = [];
    const readAvailable = () => {
      const buffer = Buffer.alloc(64 * 1024);
      for (;;) {
        let bytes = 0;
        try {
          bytes = readSync(reader, buffer);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return;
          throw error;
        }
        if (bytes === 0) return;
        received.push(Buffer.from(buffer.subarray(0, bytes)));
      }
    };
    try {
      const out = new BatchedStdout(writer, 1024, 256 * 1024);
      const lineOf = (n: number) => `{"n":${n},"pad":"${'x'.repeat(80)}"}\n`;
      const written = 6_000; // ~560 KB: more than the pipe (64 KiB) and the bound (256 KiB) together
      for (let n = 0; n < written; n++) out.write(lineOf(n));
      // The reader comes back: what waited comes through, then a new line is taken again.
      const drain = async (until: () => boolean) => {
        for (let round = 0; round < 200 && !until(); round++) {
          out.flush();
          readAvailable();
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      };
      const receivedBytes = () => received.reduce((sum, chunk) => sum + chunk.length, 0);
      let seen = -1;
      await drain(() => {
        const now = receivedBytes();
        const settled = now === seen;
        seen = now;
        return settled;
      });
      out.write(lineOf(written));
      await drain(() => Buffer.concat(received).includes(`"n":${written},`));
      const lines = Buffer.concat(received)
        .toString('utf8')
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as { n?: number; dropped_lines?: number; level?: number });
      const numbers = lines.filter((line) => line.n !== undefined).map((line) => line.n!);
      const note = lines.find((line) => line.dropped_lines !== undefined);
      expect(note).toMatchObject({ level: 40 });
      expect(numbers.at(-1)).toBe(written);
      // What was kept came in order and whole, and what is missing is exactly what the note counts.
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
      expect(numbers.length - 1 + note!.dropped_lines!).toBe(written);
      expect(lines.indexOf(note!)).toBe(lines.length - 2);
    } finally {
      closeSync(writer);
      closeSync(reader);
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

/** Runs `script` (ESM, the project's TypeScript through tsx) in a node process of its own; it must exit 0. */
function runScript(script: string): SpawnSyncReturns<string> {
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: path.resolve(import.meta.dirname, '..'),
    encoding: 'utf8',
    timeout: 15_000,
  });
  expect(child.status, child.stderr).toBe(0);
  return child;
}

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
    const child = runScript(script);
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

  it('writes request lines only while the level lets info through, as it is set at run time', () => {
    const script = `
      import { createLogger, infoLineWriter, REQUEST_LINE } from './src/logger.ts';
      const logger = createLogger({ level: 'info' });
      const writeLine = infoLineWriter(logger);
      writeLine('"reqId":"before"', REQUEST_LINE);
      logger.level = 'warn';
      writeLine('"reqId":"while-warn"', REQUEST_LINE);
      logger.child({ part: 'other' }).level = 'debug';
      writeLine('"reqId":"after-a-child-changed"', REQUEST_LINE);
      logger.level = 'info';
      writeLine('"reqId":"back-at-info"', REQUEST_LINE);
    `;
    const child = runScript(script);
    const reqIds = child.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { reqId?: string }).reqId);
    expect(reqIds).toEqual(['before', 'back-at-info']);
  });

  it('keeps working while nobody reads its stdout pipe', async () => {
    const script = `
      import { createLogger, infoLineWriter, REQUEST_LINE } from './src/logger.ts';
      const writeLine = infoLineWriter(createLogger({ level: 'info' }));
      for (let n = 0; n < 50_000; n++) writeLine('"reqId":"' + n + '"', REQUEST_LINE);
      process.stderr.write('done\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: path.resolve(import.meta.dirname, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      // stdout is never read: ~15 MB of lines against a 64 KiB pipe.
      child.stdout.pause();
      const done = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 15_000);
        child.stderr.on('data', (chunk: Buffer) => {
          if (chunk.toString().includes('done')) {
            clearTimeout(timer);
            resolve(true);
          }
        });
        child.once('exit', () => resolve(false));
      });
      expect(done).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
