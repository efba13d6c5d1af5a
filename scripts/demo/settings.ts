/**
 * Seeds and sizes of the demo resources. Changing any value here changes the files that
 * `npm run demo:build-resources` writes.
 */
export const SEED = 1234;

/** Special tokens in id order: `<|endoftext|>` is 0, `<|im_start|>` 1, `<|im_end|>` 2. */
export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/**
 * Upper bound for the BPE vocabulary. Training stops earlier when no pair occurs twice, which
 * happens on this corpus (its word list is small), so the real size is read from the tokenizer.
 */
export const MAX_VOCAB_SIZE = 1280;

export const CORPUS = { seed: SEED, targetCharacters: 700_000, chatCount: 2500 };

export const TRAINING = {
  steps: 360,
  batchSize: 8,
  sequenceLength: 128,
  learningRate: 3e-3,
  /** The cosine schedule ends at this fraction of the peak rate instead of zero. */
  finalRateFraction: 0.1,
  warmupSteps: 30,
  weightDecay: 0.1,
  maxGradNorm: 1.0,
  /** Fraction of the token chunks kept out of training to measure validation loss. */
  validationFraction: 0.02,
  logEvery: 10,
};

export const DATASET = { seed: 5, chatRows: 320, heldOutPrompts: 8, promptCompletionRows: 100 };

/**
 * File names under `resources/demo-data/`. The chat file must sort first: the demo command and
 * the app take the first dataset file of the folder in name order.
 */
export const DATA_FILES = {
  chat: 'chat-storyteller.jsonl',
  promptCompletion: 'prompt-completion-storyteller.jsonl',
  /** A JSON array of user questions, as the demo command reads it. */
  samplePrompts: 'sample-prompts.json',
};
