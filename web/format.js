// Small text formatting helpers (no DOM).

/** "just now", "3 s ago", "4 min ago", "2 h ago", "3 days ago" for an age in milliseconds. */
export function formatAge(ms) {
  if (ms == null || !Number.isFinite(ms)) return 'never';
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 1) return 'just now';
  if (s < 60) return `${s} s ago`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} days ago`;
}

/** "1 spot", "42 spots". */
export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** Shortest decimal for SVG attributes: 4.5, 12, 0.333. */
export function num(x) {
  return String(Math.round(x * 1000) / 1000);
}
