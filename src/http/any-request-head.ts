import type { IncomingHttpHeaders } from 'node:http';
import { HEAD_END, MAX_HEAD_BYTES } from './plain-request-head.js';
import { requestFieldsOf, type RequestFields } from './request-fields.js';

/** A request head read leniently: what the line of a request never answered says of it. */
export interface AnyRequestHead {
  method: string;
  target: string;
  /** The first value of each field. */
  fields: RequestFields;
  /** The head's length in bytes, its blank line and a body its Content-Length declares included. */
  length: number;
}

const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/\d\.\d$/;
const DECIMAL = /^\d{1,15}$/;

/**
 * The request at the start of `buffer`, read as far as its line needs: its
 * request line, its fields (the first of each name, for the caller and the
 * request id) and where the next request starts. Undefined when its head is
 * not whole, its request line is not one, or where its body ends cannot be
 * told (chunked, or a body not all there): nothing after it is read either.
 * Never for answering: a request read here is only ever reported unanswered
 * (the memory-hit door's connection gone with requests it had read).
 */
export function readAnyRequestHead(buffer: Buffer): AnyRequestHead | undefined {
  const end = buffer.indexOf(HEAD_END);
  if (end === -1 || end > MAX_HEAD_BYTES) return undefined;
  const lines = buffer.toString('latin1', 0, end).split('\r\n');
  const requestLine = REQUEST_LINE.exec(lines[0]!);
  if (!requestLine) return undefined;
  const headers: Record<string, string> = {};
  let credentials = 0;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).toLowerCase();
    if (name === 'authorization') credentials++;
    headers[name] ??= line.slice(colon + 1).trim();
  }
  // The app refuses a request with two: neither vouches for it.
  if (credentials > 1) delete headers.authorization;
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const declared = headers['content-length'] ?? '0';
  if (!DECIMAL.test(declared)) return undefined;
  const length = end + HEAD_END.length + Number(declared);
  if (length > buffer.length) return undefined;
  return { method: requestLine[1]!, target: requestLine[2]!, fields: requestFieldsOf(headers as IncomingHttpHeaders), length };
}
