/**
 * recording-gateway's client library, for tenant backends on Node 20 or later.
 * Only Node built-ins and the global fetch: nothing of the gateway's server code.
 */
export {
  DEFAULT_TIMEOUT_MS,
  RecordingGatewayClient,
  type CreateSignedUrlOptions,
  type DownloadedRecording,
  type RecordingGatewayClientOptions,
  type SignedRecordingUrl,
} from './recording-gateway-client.js';
export {
  IncompleteDownloadError,
  RecordingGatewayError,
  RecordingGatewayTimeoutError,
  type RecordingGatewayErrorOptions,
  type RecordingGatewayRequest,
} from './errors.js';
export {
  recordingSignature,
  signRecordingUrl,
  type RecordingSignatureInput,
  type SignRecordingUrlOptions,
} from './signing.js';
