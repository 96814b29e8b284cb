/**
 * The configuration each server of the peers bench runs with: the gateway
 * with its defaults, nginx as a plain proxy_cache (as Debian configures it,
 * plus the cache), Varnish with the few lines it needs to cache a recording
 * fetched with a key. Every path is under the server's temp dir, every socket
 * on 127.0.0.1.
 */
import { createHash } from 'node:crypto';

/**
 * The gateway's YAML: one tenant, everything else at its default (request log
 * included); with `auditDir`, an audit trail there (its retention at the default).
 */
export function gatewayYaml(options: {
  port: number;
  upstreamBaseUrl: string;
  cacheDir: string;
  tenantKey: string;
  auditDir?: string;
}): string {
  const digest = createHash('sha256').update(options.tenantKey).digest('hex');
  return [
    `listen: { host: 127.0.0.1, port: ${options.port} }`,
    'upstream:',
    `  base_url: ${JSON.stringify(options.upstreamBaseUrl)}`,
    'cache:',
    `  dir: ${JSON.stringify(options.cacheDir)}`,
    ...(options.auditDir === undefined ? [] : ['audit:', `  dir: ${JSON.stringify(options.auditDir)}`]),
    'tenants:',
    '  - id: bench',
    `    api_keys: ["sha256:${digest}"]`,
    '',
  ].join('\n');
}

/**
 * nginx with one worker caching whatever the upstream answers 200 or 206 for a
 * day. A buffered combined access log, as a busy site would keep one.
 * `sendfile` and `tcp_nopush` stay at nginx's defaults (off): Debian's
 * packaged nginx.conf turns both on, and together on loopback they hold the
 * end of a 64 KB range answer for about 40 ms (TCP_CORK), which would make
 * nginx look ten times slower than it is. `X-Cache-Status` is there for the
 * bench's hit check.
 */
export function nginxConf(options: { dir: string; port: number; upstreamPort: number; serverKey: string }): string {
  const { dir } = options;
  return `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;

events {
    worker_connections 1024;
}

http {
    access_log ${dir}/access.log combined buffer=64k flush=1s;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    proxy_cache_path ${dir}/cache levels=1:2 keys_zone=recordings:10m max_size=1g inactive=1d use_temp_path=off;

    server {
        listen 127.0.0.1:${options.port};
        location / {
            proxy_pass http://127.0.0.1:${options.upstreamPort};
            proxy_set_header Authorization "Bearer ${options.serverKey}";
            proxy_cache recordings;
            proxy_cache_valid 200 206 1d;
            add_header X-Cache-Status $upstream_cache_status always;
        }
    }
}
`;
}

/**
 * Varnish caching the upstream for a day. Its built-in VCL passes any request
 * with an Authorization header; clients here send none, and the upstream key
 * is added only to the backend fetch, so it never enters the cache key or a
 * client's answer. `X-Cache` is there for the bench's hit check.
 */
export function varnishVcl(options: { upstreamPort: number; serverKey: string }): string {
  return `vcl 4.1;

backend upstream {
    .host = "127.0.0.1";
    .port = "${options.upstreamPort}";
}

sub vcl_recv {
    unset req.http.Authorization;
}

sub vcl_backend_fetch {
    set bereq.http.Authorization = "Bearer ${options.serverKey}";
}

sub vcl_backend_response {
    if (beresp.status == 200) {
        set beresp.ttl = 1d;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
`;
}

/** wrk's Lua script: fixed headers, an optional random window per request, and a JSON summary line at the end. */
export function wrkScript(options: { headers: Record<string, string>; randomWindow?: { length: number; size: number } }): string {
  const headerLines = Object.entries(options.headers).map(
    ([name, value]) => `wrk.headers[${JSON.stringify(name)}] = ${JSON.stringify(value)}`,
  );
  const window = options.randomWindow;
  const request = window
    ? `
math.randomseed(os.time())
request = function()
  local from = math.random(0, ${window.size - window.length})
  wrk.headers["Range"] = "bytes=" .. from .. "-" .. (from + ${window.length - 1})
  return wrk.format(nil, nil, wrk.headers)
end
`
    : '';
  // done() runs in wrk's main thread once the load has stopped: its own
  // /proc/self/stat then holds the CPU every wrk thread used.
  return `${headerLines.join('\n')}
${request}
done = function(summary, latency, requests)
  local stat = io.open("/proc/self/stat"):read("*l")
  local rest = stat:sub(stat:find("%)[^%)]*$") + 2)
  local fields = {}
  for field in rest:gmatch("%S+") do fields[#fields + 1] = field end
  local e = summary.errors
  io.write(string.format(
    'PEERS_JSON {"requests":%.0f,"bytes":%.0f,"durationUs":%.0f,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%.1f,"p99Us":%.1f,"maxUs":%.1f,"cpuTicks":%d}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, tonumber(fields[12]) + tonumber(fields[13])))
end
`;
}
