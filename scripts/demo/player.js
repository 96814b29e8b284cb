// The demo frontend. It never sees an API key: /api/recordings (this page's own
// backend) returns signed URLs, which <audio> can use because it cannot send headers.
'use strict';

const SEEK_POINTS = [
  { label: 'Start', fraction: 0, id: '0' },
  { label: '25%', fraction: 0.25, id: '25' },
  { label: '50%', fraction: 0.5, id: '50' },
  { label: '90%', fraction: 0.9, id: '90' },
];

const MEDIA_ERRORS = {
  1: 'playback aborted',
  2: 'network error',
  3: 'could not decode the audio',
  4: 'the gateway refused the link or it is not audio',
};

const pageStatus = document.querySelector('[data-testid="page-status"]');
const list = document.querySelector('[data-testid="recordings"]');
const template = document.getElementById('recording-template');

function formatTime(seconds) {
  if (!Number.isFinite(seconds)) return '–:––';
  // Floor, like the browser's own controls, so the two never disagree.
  const whole = Math.max(0, Math.floor(seconds));
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
}

function setStatus(element, text, state) {
  element.textContent = text;
  element.dataset.state = state;
}

// The waveform's points are capped (the gateway allows up to 10000): a canvas wider than this shares them out.
const MAX_WAVEFORM_POINTS = 2000;
const KEY_SEEK_SECONDS = 5;

/**
 * The waveform's URL: the audio's own signed URL with the path of peaks.json.
 * A signature names the tenant, call and expiry, not the route, so the one
 * signed URL the backend minted opens both.
 */
function peaksUrl(audioUrl, points) {
  const url = new URL(audioUrl);
  url.pathname = url.pathname.replace(/\.mp3$/, '/peaks.json');
  url.searchParams.set('points', String(points));
  return url.href;
}

/** Draws min,max pairs (audiowaveform JSON) across the canvas; the played part in the accent colour. */
function drawWaveform(canvas, peaks, playedFraction) {
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  const style = getComputedStyle(canvas);
  const played = style.getPropertyValue('--accent').trim() || '#2f6fde';
  const rest = style.getPropertyValue('--muted').trim() || '#5f6b7a';
  context.clearRect(0, 0, width, height);
  const middle = height / 2;
  const scale = middle / 128;
  const step = width / peaks.length;
  for (let i = 0; i < peaks.length; i++) {
    // From the highest to the lowest sample, and through the middle line, so silence still shows.
    const top = middle - Math.max(peaks.data[2 * i + 1], 0) * scale - 0.5;
    const bottom = middle - Math.min(peaks.data[2 * i], 0) * scale + 0.5;
    context.fillStyle = (i + 0.5) / peaks.length <= playedFraction ? played : rest;
    context.fillRect(i * step, top, Math.max(step - (step > 2 ? 1 : 0), 1), bottom - top);
  }
  context.fillStyle = played;
  context.fillRect(Math.min(width - 1, playedFraction * width), 0, 1, height);
}

/** Loads the waveform into the canvas, keeps the played part in step with the audio, and seeks where it is clicked. */
function attachWaveform(canvas, audio, audioUrl) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  const points = Math.min(MAX_WAVEFORM_POINTS, canvas.width);
  let peaks;
  const fraction = () => (audio.duration > 0 ? Math.min(1, audio.currentTime / audio.duration) : 0);
  const redraw = () => {
    canvas.setAttribute('aria-valuenow', String(Math.round(fraction() * 100)));
    if (peaks) drawWaveform(canvas, peaks, fraction());
  };
  // While playing, follow the audio frame by frame; timeupdate alone comes only a few times a second.
  let frame = 0;
  const follow = () => {
    redraw();
    frame = audio.paused ? 0 : requestAnimationFrame(follow);
  };
  audio.addEventListener('play', () => {
    if (!frame) frame = requestAnimationFrame(follow);
  });
  for (const event of ['timeupdate', 'seeked', 'loadedmetadata']) audio.addEventListener(event, redraw);

  canvas.addEventListener('click', (event) => {
    const box = canvas.getBoundingClientRect();
    seek(audio, Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)));
  });
  canvas.addEventListener('keydown', (event) => {
    const by = { ArrowLeft: -KEY_SEEK_SECONDS, ArrowRight: KEY_SEEK_SECONDS }[event.key];
    if (by === undefined || !(audio.duration > 0)) return;
    event.preventDefault();
    seek(audio, Math.min(1, Math.max(0, (audio.currentTime + by) / audio.duration)));
  });

  fetch(peaksUrl(audioUrl, points), { mode: 'cors', credentials: 'omit' })
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.message ?? `HTTP ${response.status}`);
      peaks = body;
      canvas.dataset.state = 'ready';
      redraw();
    })
    .catch((error) => {
      canvas.dataset.state = 'error';
      canvas.title = `Waveform unavailable: ${error.message}`;
    });
}

/** Seeks once the duration is known, then plays; buttons work before metadata arrives too. */
function seek(audio, fraction) {
  const go = () => {
    audio.currentTime = Math.min(audio.duration * fraction, Math.max(0, audio.duration - 0.1));
    audio.play().catch(() => {}); // a refused play() shows up through the element's own events
  };
  if (audio.readyState >= HTMLMediaElement.HAVE_METADATA) go();
  else audio.addEventListener('loadedmetadata', go, { once: true });
}

function render(recording, expiresAt) {
  const item = template.content.firstElementChild.cloneNode(true);
  const { id } = recording;
  item.dataset.recordingId = String(id);
  item.querySelector('.call-id').textContent = `#${id}`;
  item.querySelector('.title').textContent = recording.title;
  const duration = item.querySelector('.duration');
  duration.textContent = formatTime(recording.duration_seconds);
  duration.dataset.testid = `duration-${id}`;

  const status = item.querySelector('.status');
  status.dataset.testid = `status-${id}`;
  const audio = item.querySelector('audio');
  audio.dataset.testid = `audio-${id}`;
  audio.dataset.signedUrl = recording.url;
  audio.setAttribute('aria-label', recording.title);
  const waveform = item.querySelector('.waveform');
  waveform.dataset.testid = `waveform-${id}`;
  waveform.setAttribute('aria-label', `Waveform of ${recording.title}: click to seek`);

  const seekGroup = item.querySelector('.seek');
  for (const point of SEEK_POINTS) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = point.label;
    button.dataset.testid = `seek-${id}-${point.id}`;
    button.addEventListener('click', () => seek(audio, point.fraction));
    seekGroup.append(button);
  }

  audio.addEventListener('loadedmetadata', () => setStatus(status, 'Ready', 'ready'));
  audio.addEventListener('seeking', () => setStatus(status, `Seeking to ${formatTime(audio.currentTime)}…`, 'busy'));
  audio.addEventListener('waiting', () => setStatus(status, 'Buffering…', 'busy'));
  audio.addEventListener('playing', () => setStatus(status, 'Playing', 'playing'));
  audio.addEventListener('pause', () => {
    if (!audio.ended) setStatus(status, `Paused at ${formatTime(audio.currentTime)}`, 'ready');
  });
  audio.addEventListener('ended', () => setStatus(status, 'Finished', 'ready'));
  audio.addEventListener('play', () => {
    // One call at a time, like any player.
    for (const other of list.querySelectorAll('audio')) if (other !== audio) other.pause();
  });
  audio.addEventListener('error', () => {
    const expired = Date.now() / 1000 >= expiresAt;
    const reason = expired ? 'link expired, reload the page for fresh ones' : (MEDIA_ERRORS[audio.error?.code] ?? 'playback failed');
    setStatus(status, `Error: ${reason}`, 'error');
  });

  audio.src = recording.url;
  return item;
}

async function load() {
  document.querySelector('[data-testid="page-origin"]').textContent = location.origin;
  let body;
  try {
    const response = await fetch('/api/recordings', { cache: 'no-store' });
    body = await response.json();
    if (!response.ok) throw new Error(body.message ?? `HTTP ${response.status}`);
  } catch (error) {
    setStatus(pageStatus, `Could not load the recordings: ${error.message}`, 'error');
    return;
  }
  document.querySelector('[data-testid="gateway-origin"]').textContent = new URL(body.gateway).origin;
  const expiresAt = Math.min(...body.recordings.map((r) => r.expires_at));
  list.replaceChildren(...body.recordings.map((recording) => render(recording, recording.expires_at)));
  // Laid out now, so each canvas knows its width.
  for (const recording of body.recordings) {
    const item = list.querySelector(`[data-recording-id="${recording.id}"]`);
    attachWaveform(item.querySelector('.waveform'), item.querySelector('audio'), recording.url);
  }
  setStatus(pageStatus, `${body.recordings.length} recordings`, 'ready');
  pageStatus.hidden = true;
  const until = new Date(expiresAt * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  document.querySelector('[data-testid="links-expiry"]').textContent =
    `Signed links valid until ${until}; reloading the page mints fresh ones.`;
}

load();
