/**
 * The client package as a user installs it: `npm pack` of the workspace, then
 * `npm install <tarball>` into an empty project, offline. Packs the compiled
 * `packages/client/dist/` as it is (`npm test` builds it first), without
 * rebuilding it under the other test files' feet.
 */
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { ROOT } from '../dev/run-cli.js';

const exec = promisify(execFile);
const TSC = path.join(path.dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
const PACKAGE = '@recording-gateway/client';

/** The environment without what `npm test` itself set (npm_config_*, npm_package_*), so child npm runs are a user's. */
function userEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));
}

async function run(command: string, args: string[], cwd: string): Promise<string> {
  const { stdout } = await exec(command, args, { cwd, env: userEnv(), maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

describe(`${PACKAGE} as a packed tarball`, () => {
  let work: string;
  let tarball: string;
  let unpacked: string;
  let project: string;

  beforeAll(async () => {
    const client = JSON.parse(await readFile(path.join(ROOT, 'packages/client/package.json'), 'utf8')) as { main: string };
    await readFile(path.join(ROOT, 'packages/client', client.main)).catch(() => {
      throw new Error(`${PACKAGE} is not built: run \`npm run build:client\` (npm test does it first)`);
    });
    work = await makeTempDir('rg-client-package-');
    const packed = JSON.parse(
      await run('npm', ['pack', '--json', '--ignore-scripts', '--workspace', PACKAGE, '--pack-destination', work], ROOT),
    ) as Array<{ filename: string }>;
    tarball = path.join(work, packed[0]!.filename);
    unpacked = path.join(work, 'unpacked');
    await mkdir(unpacked);
    await run('tar', ['-xzf', tarball, '-C', unpacked], work);

    project = path.join(work, 'project');
    await mkdir(project);
    await run('npm', ['init', '-y'], project);
    await run('npm', ['pkg', 'set', 'type=module'], project);
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], project);
  }, 60_000);

  afterAll(async () => {
    if (work) await removeDir(work);
  });

  it('ships the compiled client, its types, README and licence, and none of its TypeScript sources', async () => {
    const files = (await run('tar', ['-tzf', tarball], work)).trim().split('\n').sort();

    expect(files).toEqual(expect.arrayContaining(['package/package.json', 'package/README.md', 'package/LICENSE']));
    expect(files).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/signing.js']));
    expect(files.filter((file) => !/^package\/(dist\/[a-z-]+\.(js|d\.ts|js\.map)|package\.json|README\.md|LICENSE)$/.test(file))).toEqual(
      [],
    );
  });

  it('ships no source map that points at a file missing from the tarball', async () => {
    const dist = path.join(unpacked, 'package', 'dist');
    const maps = (await readdir(dist)).filter((file) => file.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);

    const dangling: string[] = [];
    for (const file of maps) {
      const map = JSON.parse(await readFile(path.join(dist, file), 'utf8')) as { sources: string[]; sourcesContent?: Array<string | null> };
      for (const [index, source] of map.sources.entries()) {
        if (typeof map.sourcesContent?.[index] === 'string') continue;
        const exists = await readFile(path.resolve(dist, source)).then(
          () => true,
          () => false,
        );
        if (!exists) dangling.push(`${file} → ${source}`);
      }
    }
    expect(dangling).toEqual([]);
  });

  it('installs into an empty project with zero dependencies of its own', async () => {
    const tree = JSON.parse(await run('npm', ['ls', '--all', '--json'], project)) as {
      dependencies: Record<string, { version: string; dependencies?: object }>;
    };

    expect(Object.keys(tree.dependencies)).toEqual([PACKAGE]);
    expect(tree.dependencies[PACKAGE]).toMatchObject({ version: '0.3.0' });
    expect(tree.dependencies[PACKAGE]!.dependencies ?? {}).toEqual({});
    expect((await readdir(path.join(project, 'node_modules'))).filter((name) => !name.startsWith('.'))).toEqual(['@recording-gateway']);
  });

  it("type-checks a user's strict TypeScript with the package's own types, and rejects misuse", async () => {
    await writeFile(
      path.join(project, 'use.ts'),
      [
        "import { IncompleteDownloadError, RecordingGatewayClient, RecordingGatewayError, signRecordingUrl, type DownloadedRecording } from '@recording-gateway/client';",
        "const gateway = new RecordingGatewayClient({ baseUrl: 'https://recordings.example.com', apiKey: 'rk_live_example', timeoutMs: 30_000 });",
        'export async function fetchOne(): Promise<DownloadedRecording | string> {',
        '  try {',
        "    return await gateway.getCallRecording(694, './recordings/call-694.mp3');",
        '  } catch (error) {',
        '    if (error instanceof IncompleteDownloadError) return `${error.receivedBytes} of ${error.expectedBytes}`;',
        '    if (error instanceof RecordingGatewayError) return `${error.status} ${error.reason} ${error.retryAfterSeconds ?? 0}`;',
        '    throw error;',
        '  }',
        '}',
        "export const src: string = signRecordingUrl({ tenant: 'acme', kid: 'k1', secret: 's', callId: 694, expiresAt: 2_000_000_000 });",
        'export const signed: Promise<{ url: string; expiresAt: number }> = gateway.createSignedUrl(694, { ttlSeconds: 600 });',
        '// @ts-expect-error the API key is required',
        "new RecordingGatewayClient({ baseUrl: 'https://recordings.example.com' });",
        '// @ts-expect-error a call id is a number or a string',
        'void gateway.deleteCallRecording({ id: 694 });',
        '// @ts-expect-error the key stays private',
        'void gateway.apiKey;',
        '',
      ].join('\n'),
    );

    const check = exec(
      process.execPath,
      [TSC, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--strict', '--noEmit', 'use.ts'],
      {
        cwd: project,
        env: userEnv(),
      },
    );

    await expect(check).resolves.toMatchObject({ stdout: '' });
  }, 60_000);

  it('runs in the empty project: its signed URL carries the documented HMAC signature', async () => {
    const script = [
      "import { RecordingGatewayClient, signRecordingUrl } from '@recording-gateway/client';",
      "new RecordingGatewayClient({ baseUrl: 'https://recordings.example.com', apiKey: 'rk_live_example' });",
      "console.log(signRecordingUrl({ tenant: 'acme', kid: 'k1', secret: 'sekrit', callId: 694, expiresAt: 2000000000 }));",
    ].join('\n');

    const url = new URL((await run(process.execPath, ['--input-type=module', '-e', script], project)).trim(), 'https://x.example');

    const sig = createHmac('sha256', 'sekrit').update('v1\nacme\n694\n2000000000').digest('base64url');
    expect(url.pathname).toBe('/v1/call/recording/694.mp3');
    expect(Object.fromEntries(url.searchParams)).toEqual({ tenant: 'acme', exp: '2000000000', kid: 'k1', sig });
  });
});
