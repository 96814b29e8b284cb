/**
 * The set-up most in-process gateway tests share: before each test a fresh
 * fake Flyflow and cache directory; after it every gateway the test started
 * closed, the upstream closed and the directory removed.
 */
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../../dev/fake-flyflow.js';
import {
  makeTempDir,
  namespaceFor,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
  type TestConfigOptions,
} from '../../dev/gateway-harness.js';

type StartOptions = NonNullable<Parameters<typeof startGateway>[1]>;

/** What one test works with; read it inside tests and hooks (it changes before each test). */
export interface GatewayTestBed {
  /** This test's fake Flyflow. Closing it in a test is fine: it is closed again (a no-op) after it. */
  readonly upstream: FakeFlyflow;
  /** This test's cache directory. */
  readonly dir: string;
  /** Starts a gateway on `testConfig` with this test's directory and upstream; closed after the test unless stopped first. */
  start(config?: Partial<TestConfigOptions>, options?: StartOptions): Promise<RunningGateway>;
  /** Closes a gateway `start` returned, before the test ends. */
  stop(gateway: RunningGateway): Promise<void>;
  /** A gateway started some other way (a config of its own), closed after the test like the others. */
  track(gateway: RunningGateway): RunningGateway;
  /** Closes every gateway of the test now, e.g. before removing a directory of its own. */
  stopAll(): Promise<void>;
  /** A recording's file, or its peaks sidecar (in a folder of their own beside `recordings/`), for the test tenant. */
  recordingFile(id: number, extension: 'mp3' | 'peaks'): string;
}

/**
 * Registers the `beforeEach` and `afterEach` of a {@link GatewayTestBed}.
 * `prepare` runs once the upstream is up (recordings of the file's own, say).
 */
export function gatewayPerTest(tempPrefix: string, prepare?: (upstream: FakeFlyflow) => void | Promise<void>): GatewayTestBed {
  let upstream: FakeFlyflow | undefined;
  let dir: string | undefined;
  const running: RunningGateway[] = [];

  beforeEach(async () => {
    upstream = await startFakeFlyflow();
    dir = await makeTempDir(tempPrefix);
    await prepare?.(upstream);
  });

  async function stopAll(): Promise<void> {
    for (const gateway of running.splice(0)) await gateway.close();
  }

  afterEach(async () => {
    await stopAll();
    await upstream?.close();
    if (dir) await removeDir(dir);
  });

  const bed: GatewayTestBed = {
    get upstream() {
      if (!upstream) throw new Error('gatewayPerTest: the upstream is read outside a test');
      return upstream;
    },
    get dir() {
      if (!dir) throw new Error('gatewayPerTest: the directory is read outside a test');
      return dir;
    },
    async start(config = {}, options = {}) {
      return bed.track(await startGateway(testConfig({ dir: bed.dir, upstreamBaseUrl: bed.upstream.baseUrl, ...config }), options));
    },
    track(gateway) {
      running.push(gateway);
      return gateway;
    },
    stopAll,
    async stop(gateway) {
      running.splice(running.indexOf(gateway), 1);
      await gateway.close();
    },
    recordingFile(id, extension) {
      const folder = extension === 'mp3' ? 'recordings' : 'sidecars';
      return path.join(bed.dir, folder, namespaceFor(bed.upstream.baseUrl), `${id}.${extension}`);
    },
  };
  return bed;
}

/** Waits until every download is stored and the analysis each store started has run. */
export async function settled(gateway: RunningGateway): Promise<void> {
  await gateway.gateway.downloads.idle();
  await gateway.gateway.analyser.idle();
}
