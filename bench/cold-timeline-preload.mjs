/**
 * Loaded with `node --import` into a server under `npm run bench:cold-timeline`
 * (the compiled gateway, the node:http floor): times each cold miss's steps
 * at node:http's edges, without touching the server's own code. For every
 * `GET /v1/call/recording/{id}.mp3` other than the warm path's id
 * (`COLD_TIMELINE_WARM_ID`) that makes an upstream request, one JSON line goes
 * to `COLD_TIMELINE_FILE`: milliseconds from the request's `request` event to
 * `http.request` called for the upstream, the request's first bytes written
 * to a socket, the upstream's head in (`response`), the client's head
 * (`writeHead`) and its first body bytes (`write`/`end`).
 *
 * Assumes misses one at a time, as the bench sends them: the upstream request
 * belongs to the latest recording request.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';

const file = process.env.COLD_TIMELINE_FILE;
const warmId = process.env.COLD_TIMELINE_WARM_ID ?? '1';
const RECORDING_PATH = /^\/v1\/call\/recording\/(\d+)\.mp3$/;

if (file) {
  const out = openSync(file, 'a');
  process.once('exit', () => closeSync(out));
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  /** The latest cold recording request: its start and the steps reached, in ms since. */
  let current;

  const step = (record, name) => {
    if (record && record[name] === undefined) record[name] = now() - record.started;
  };

  const emit = http.Server.prototype.emit;
  http.Server.prototype.emit = function (event, ...args) {
    if (event === 'request') {
      const [request, response] = args;
      const id = RECORDING_PATH.exec(request.url ?? '')?.[1];
      if (id !== undefined && id !== warmId) {
        current = { started: now() };
        response.coldTimeline = current;
      }
    }
    return emit.call(this, event, ...args);
  };

  // The gateway imports `request` from node:http by name: syncBuiltinESMExports makes that name this wrapper.
  const request = http.request;
  http.request = function (...args) {
    const record = current;
    step(record, 'upstreamCalled');
    const upstream = request.apply(this, args);
    if (record) {
      // node:http emits 'socket' just before it writes the request there.
      upstream.prependOnceListener('socket', (socket) => {
        record.upstreamSocket = socket;
      });
      // Before the server's own listener, which may write the client's head at once.
      upstream.prependOnceListener('response', () => step(record, 'upstreamHead'));
    }
    return upstream;
  };
  syncBuiltinESMExports();

  const socketWrite = net.Socket.prototype.write;
  net.Socket.prototype.write = function (...args) {
    if (current !== undefined && current.upstreamSocket === this) step(current, 'upstreamWritten');
    return socketWrite.apply(this, args);
  };

  const writeHead = http.ServerResponse.prototype.writeHead;
  http.ServerResponse.prototype.writeHead = function (...args) {
    step(this.coldTimeline, 'clientHead');
    return writeHead.apply(this, args);
  };

  const firstBody = (response, chunk) => {
    const record = response.coldTimeline;
    if (!record || record.clientFirstByte !== undefined || chunk == null || chunk.length === 0) return;
    step(record, 'clientFirstByte');
    const { started, upstreamSocket, ...steps } = record;
    // Only misses: a request answered without going upstream is no cold miss.
    if (steps.upstreamCalled !== undefined) writeSync(out, `${JSON.stringify(steps)}\n`);
    if (current === record) current = undefined;
  };
  const write = http.ServerResponse.prototype.write;
  http.ServerResponse.prototype.write = function (...args) {
    firstBody(this, args[0]);
    return write.apply(this, args);
  };
  const end = http.ServerResponse.prototype.end;
  http.ServerResponse.prototype.end = function (...args) {
    if (typeof args[0] !== 'function') firstBody(this, args[0]);
    return end.apply(this, args);
  };
}
