/** Flattening and comparing run configurations for the run page and the compare view. */
import type { TrainConfig } from '../../shared/train-config';
import { formatLearningRate } from './format';

/** `{ lora: { r: 8 } }` → `{ 'lora.r': '8' }`, arrays joined with commas. */
export function flattenConfig(config: TrainConfig): Record<string, string> {
  const flat: Record<string, string> = {};
  const visit = (value: unknown, prefix: string): void => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [key, inner] of Object.entries(value)) visit(inner, prefix ? `${prefix}.${key}` : key);
      return;
    }
    flat[prefix] = Array.isArray(value) ? value.join(', ') : String(value);
  };
  visit(config, '');
  return flat;
}

/** Keys whose values differ between any two of the configs, with each config's value. */
export function diffConfigs(configs: TrainConfig[]): { key: string; values: string[] }[] {
  const flats = configs.map(flattenConfig);
  const keys = [...new Set(flats.flatMap((flat) => Object.keys(flat)))].sort();
  return keys
    .map((key) => ({ key, values: flats.map((flat) => flat[key] ?? '—') }))
    .filter((row) => new Set(row.values).size > 1);
}

/** A flattened config value for display: learning rates in scientific notation (2e-4). */
export function formatConfigValue(key: string, value: string): string {
  if (key === 'learningRate' && value.trim() !== '' && Number.isFinite(Number(value))) return formatLearningRate(Number(value));
  return value;
}
