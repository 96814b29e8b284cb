import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createClient as generate } from '@hey-api/openapi-ts';

/*
 * A client generated from the gateway's own /openapi.json by a third-party
 * generator (@hey-api/openapi-ts: a fetch client with one function per
 * operation), the way a tenant would build one. Nothing here is written by
 * hand against the gateway: if the document is wrong, the client is.
 */

/** The slice of the generated SDK these tests call; the compile check types the rest. */
export interface GeneratedSdk {
  getRecording(options: SdkOptions): Promise<SdkResult<Blob>>;
  createSignedUrl(options: SdkOptions & { body?: { ttl_seconds?: number } }): Promise<SdkResult<{ url: string; expires_at: number }>>;
}

/** What every generated operation takes: the generated client, its path, query and header parameters. */
export interface SdkOptions {
  client: GeneratedClient;
  path: { id: string };
  query?: Record<string, string>;
  headers?: Record<string, string>;
  auth?: AuthCallback;
}

/** The fetch client's answer: `data` on 2xx, `error` (the parsed JSON error body) otherwise. */
export interface SdkResult<T> {
  data?: T;
  error?: { error: string; message: string };
  response: Response;
}

/** One security scheme of the operation, as the generated client asks for its token. */
export interface SecurityScheme {
  type: 'apiKey' | 'http';
  scheme?: 'basic' | 'bearer';
  in?: 'header' | 'query' | 'cookie';
  name?: string;
}

/** Called once per security scheme of an operation; a token is sent for each scheme that gets one. */
export type AuthCallback = (scheme: SecurityScheme) => string | undefined;

/** A client instance made by the generated package's createClient(). */
export type GeneratedClient = object;

/** The generated client package: its SDK functions and its client factory. */
export interface GeneratedPackage {
  sdk: GeneratedSdk;
  createClient(config: { baseUrl: string; auth?: AuthCallback; fetch?: (request: Request) => Promise<Response> }): GeneratedClient;
}

/** Runs the generator on `document`, writing TypeScript into `outputDir`. */
export async function generateClient(document: object, outputDir: string): Promise<void> {
  await generate({
    input: document as Record<string, unknown>,
    output: { path: outputDir, module: { extension: '.js' } },
    plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
    logs: { level: 'silent', file: false },
  });
}

/** Imports the generated TypeScript (vitest transforms it like any other module). */
export async function importGeneratedClient(outputDir: string): Promise<GeneratedPackage> {
  const sdk = (await import(pathToFileURL(path.join(outputDir, 'index.ts')).href)) as GeneratedSdk;
  const clientModule = (await import(pathToFileURL(path.join(outputDir, 'client', 'index.ts')).href)) as {
    createClient(config: unknown): GeneratedClient;
    createConfig(config: unknown): unknown;
  };
  return { sdk, createClient: (config) => clientModule.createClient(clientModule.createConfig(config)) };
}

/**
 * A tenant's code written against the generated client. It compiles only if
 * the document gives real types: each `@ts-expect-error` fails the compile
 * when the line it guards is allowed, as it would be were the types `any`.
 */
const TYPED_USAGE = `
import { createClient, createConfig } from './client/client/index.js';
import { createSignedUrl, getRecording } from './client/index.js';

export async function firstBytes(baseUrl: string, apiKey: string, id: string): Promise<Blob> {
  const client = createClient(createConfig({ baseUrl, auth: (scheme) => (scheme.scheme === 'bearer' ? apiKey : undefined) }));
  const { data, error, response } = await getRecording({ client, path: { id }, headers: { Range: 'bytes=0-99' } });
  if (error) {
    const reason: string = error.error;
    const message: string = error.message;
    // @ts-expect-error an error answer is {"error", "message"} and nothing else
    void error.stack;
    throw new Error(\`\${response.status} \${reason}: \${message}\`);
  }
  // @ts-expect-error the call id is text, as its path pattern says
  await getRecording({ client, path: { id: 1 } });
  return data;
}

export async function signedUrl(baseUrl: string, apiKey: string, id: string): Promise<string> {
  const client = createClient(createConfig({ baseUrl, auth: () => apiKey }));
  const { data, error } = await createSignedUrl({ client, path: { id }, body: { ttl_seconds: 60 } });
  if (error) throw new Error(error.message);
  const expiresAt: number = data.expires_at;
  // @ts-expect-error ttl_seconds is a number
  await createSignedUrl({ client, path: { id }, body: { ttl_seconds: '60' } });
  return \`\${data.url} (until \${expiresAt})\`;
}
`;

const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');

/** Compiles a tenant's code against the generated client with strict tsc; resolves with tsc's exit code and output. */
export async function typeCheckUsage(dir: string): Promise<{ code: number; output: string }> {
  const usage = path.join(dir, 'usage.ts');
  await writeFile(usage, TYPED_USAGE);
  const args = [
    TSC,
    '--noEmit',
    '--strict',
    '--noUncheckedIndexedAccess',
    '--skipLibCheck',
    '--target',
    'ES2022',
    '--module',
    'NodeNext',
    '--moduleResolution',
    'NodeNext',
    '--lib',
    'ES2023,DOM,DOM.Iterable',
    usage,
  ];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: dir, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}
