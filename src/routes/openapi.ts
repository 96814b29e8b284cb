import type { Context } from 'hono';
import { openApiDocument } from '../openapi/openapi-document.js';

// Serialised once: the document is fixed for the life of the process.
const body = JSON.stringify(openApiDocument);

/** GET /openapi.json: the OpenAPI 3.1 document of every route; anyone may read it. */
export function openApiHandler(c: Context): Response {
  return c.body(body, 200, { 'Content-Type': 'application/json', 'Cache-Control': 'public, max-age=300' });
}
