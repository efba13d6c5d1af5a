/** Display formatting shared by the views. */
import { toErrorPayload, type ErrorPayload } from '../../shared/errors';

export function formatBytes(bytes: number | undefined): string {
  if (bytes === undefined || !Number.isFinite(bytes)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 && unit > 0 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** 124000000 → "124.0M", 2300 → "2.3K". */
export function formatCount(count: number | undefined): string {
  if (count === undefined || !Number.isFinite(count)) return '—';
  if (count >= 1e9) return `${(count / 1e9).toFixed(2)}B`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(1)}M`;
  if (count >= 1e4) return `${(count / 1e3).toFixed(1)}K`;
  return count.toLocaleString('en-US');
}

export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return '—';
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  return `${hours}h ${minutes % 60}m`;
}

export function formatLoss(value: number | undefined): string {
  return value === undefined || value === null || !Number.isFinite(value) ? '—' : value.toFixed(4);
}

export function formatDate(iso: string | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString('en-US', { dateStyle: 'medium', timeStyle: 'short' });
}

export function formatLearningRate(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '—' : value.toExponential(2);
}

/** Any thrown value as `{ code, message, hint }` for ErrorBanner. */
export function asError(error: unknown): ErrorPayload {
  return toErrorPayload(error);
}
