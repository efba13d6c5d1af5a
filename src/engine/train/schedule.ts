/**
 * Learning-rate schedules with linear warmup, as transformers' get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup and get_constant_schedule_with_warmup define them. `step` is the
 * number of optimizer updates already done (0 for the first update).
 */
import type { Schedule } from '../../shared/train-config';

export function learningRateAt(step: number, baseRate: number, schedule: Schedule, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return (baseRate * step) / Math.max(1, warmupSteps);
  if (schedule === 'constant') return baseRate;
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  if (schedule === 'linear') return baseRate * Math.max(0, 1 - progress);
  return baseRate * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}
