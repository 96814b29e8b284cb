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
  setStatus(pageStatus, `${body.recordings.length} recordings`, 'ready');
  pageStatus.hidden = true;
  const until = new Date(expiresAt * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  document.querySelector('[data-testid="links-expiry"]').textContent =
    `Signed links valid until ${until}; reloading the page mints fresh ones.`;
}

load();
