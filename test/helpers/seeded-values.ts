/** Returns deterministic values in [-range, range) from a linear congruential sequence. */
export function seededValues(count: number, range: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let state = seed;
  for (let i = 0; i < count; i++) {
    state = (state * 1103515245 + 12345) % 2147483648;
    out[i] = (state / 2147483648 - 0.5) * 2 * range;
  }
  return out;
}
