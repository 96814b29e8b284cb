/**
 * The reference load balancer, config/nginx-cluster.conf, run by Debian's
 * nginx in front of two real gateways: recordings pass through with their
 * ranges, and the replicas' own routes are refused in the gateway's JSON
 * error shape. Needs nginx (apt-get install nginx-light); without it this
 * test fails rather than skips, so CI never passes without it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, rawExchange, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { freePort } from '../dev/free-port.js';

const NGINX = process.env.NGINX_PATH ?? '/usr/sbin/nginx';
const CONF = path.join(import.meta.dirname, '..', 'config', 'nginx-cluster.conf');

let upstream: FakeFlyflow;
const gateways: RunningGateway[] = [];
const dirs: string[] = [];
let nginx: ChildProcess | undefined;
let balancer: string;

/** The reference site, with the replicas and the listen address of this test put in; everything else as shipped. */
async function siteFor(replicas: string[], port: number): Promise<string> {
  const shipped = await readFile(CONF, 'utf8');
  let next = 0;
  const site = shipped
    .replace(/server gw-\d:8080;/g, () => `server ${replicas[next++]};`)
    .replace('listen 8080;', `listen 127.0.0.1:${port};`);
  expect(next).toBe(3);
  return site;
}

async function until(ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  for (const started = Date.now(); Date.now() - started < timeoutMs; ) {
    if (await ready().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nginx did not answer within ${timeoutMs} ms`);
}

beforeAll(async () => {
  if (!existsSync(NGINX)) throw new Error(`nginx not found at ${NGINX}: apt-get install nginx-light, or set NGINX_PATH`);
  upstream = await startFakeFlyflow();
  for (let i = 0; i < 2; i++) {
    const dir = await makeTempDir();
    dirs.push(dir);
    gateways.push(await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl })));
  }
  const dir = await makeTempDir('rg-nginx-');
  dirs.push(dir);
  const port = await freePort();
  const replicas = gateways.map((gateway) => new URL(gateway.baseUrl).host);
  // Three server lines in the shipped file: the third is the first replica again.
  await writeFile(path.join(dir, 'site.conf'), await siteFor([...replicas, replicas[0]!], port));
  for (const temp of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(path.join(dir, temp));
  await writeFile(
    path.join(dir, 'nginx.conf'),
    `daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${dir}/site.conf;
}
`,
  );
  nginx = spawn(NGINX, ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  balancer = `http://127.0.0.1:${port}`;
  await until(async () => (await fetch(`${balancer}/healthz`)).ok, 10_000);
}, 30_000);

afterAll(async () => {
  nginx?.kill('SIGTERM');
  for (const gateway of gateways) await gateway.close();
  await upstream?.close();
  for (const dir of dirs) await removeDir(dir);
});

describe('config/nginx-cluster.conf in front of the replicas', () => {
  test('passes a recording and its ranges through, whichever replica answers', async () => {
    const whole = await fetch(`${balancer}/v1/call/recording/1.mp3`, { headers: { authorization: `Bearer ${ACME_KEY}` } });
    expect(whole.status).toBe(200);
    expect(Buffer.from(await whole.arrayBuffer()).equals(upstream.recording(1)!)).toBe(true);
    for (let i = 0; i < 4; i++) {
      const part = await fetch(`${balancer}/v1/call/recording/1.mp3`, {
        headers: { authorization: `Bearer ${ACME_KEY}`, range: 'bytes=10-19' },
      });
      expect(part.status).toBe(206);
      expect(Buffer.from(await part.arrayBuffer()).equals(upstream.recording(1)!.subarray(10, 20))).toBe(true);
    }
  });

  test('passes an HTTP/1.0 request without Host, which HTTP/1.0 allows', async () => {
    const answer = await rawExchange(
      balancer,
      `GET /v1/call/recording/1.mp3 HTTP/1.0\r\nAuthorization: Bearer ${ACME_KEY}\r\nRange: bytes=0-3\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 206 /);
    expect(answer.endsWith(upstream.recording(1)!.subarray(0, 4).toString('latin1'))).toBe(true);
  });

  test("refuses the replicas' own routes in the gateway's JSON error shape", async () => {
    for (const target of [
      '/internal/v1/recordings/0123456789abcdef0123456789abcdef/1',
      '/internal/v1/purge/0123456789abcdef0123456789abcdef/1',
    ]) {
      const refused = await fetch(`${balancer}${target}`);
      expect(refused.status).toBe(404);
      expect(refused.headers.get('content-type')).toBe('application/json');
      expect(await refused.json()).toEqual({ error: 'Not Found', message: 'No such route' });
    }
  });
});
