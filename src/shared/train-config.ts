/**
 * The settings of one training run, as the CLI flags, the app form and the run store see them.
 * Names follow PEFT and transformers where those libraries have one (`lora_alpha`,
 * `target_modules`, `learning_rate`...), written in camelCase.
 */
export type Schedule = 'constant' | 'linear' | 'cosine';
export type LoraInit = 'kaiming' | 'gaussian';
export type Method = 'lora' | 'qlora';

export interface LoraSettings {
  /** Rank r of A [r, in] and B [out, r]. Default 8. */
  r: number;
  /** Scale numerator: s = lora_alpha / r (or / sqrt(r) with useRslora). Default 16. */
  loraAlpha: number;
  /** Dropout on the LoRA input path only. Default 0.05. */
  loraDropout: number;
  /** Module name suffixes (PEFT matching), or 'all-linear'. Default: the attention projections. */
  targetModules: string[] | 'all-linear';
  /** Restrict adapters to these layer indices; undefined means every layer. */
  layersToTransform?: number[];
  useRslora: boolean;
  initLoraWeights: LoraInit;
}

export interface QuantSettings {
  quantType: 'nf4' | 'fp4';
  blocksize: number;
  doubleQuant: boolean;
}

export interface TrainConfig {
  name?: string;
  /** Hugging Face model folder. */
  modelPath: string;
  /** Dataset id in the dataset store, or a file path for the CLI. */
  datasetId?: string;
  datasetPath?: string;
  validationPath?: string;
  /** Fraction of rows held out for validation when no validation file is given. */
  validationSplit: number;
  method: Method;
  lora: LoraSettings;
  quant?: QuantSettings;
  /** Existing PEFT adapter folder to continue training from. */
  initAdapter?: string;

  learningRate: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  schedule: Schedule;
  warmupSteps: number;
  /** Stop after this many optimizer steps; 0 means train for `epochs`. */
  maxSteps: number;
  epochs: number;
  batchSize: number;
  gradientAccumulationSteps: number;
  /** Global-norm clipping threshold; 0 turns clipping off. */
  maxGradNorm: number;
  maxSeqLength: number;
  /** Compute loss on prompt tokens too (default: completion/assistant tokens only). */
  trainOnPrompt: boolean;
  packing: boolean;
  evalSteps: number;
  saveSteps: number;
  seed: number;
  /**
   * Whether the backward pass recomputes each transformer block's activations instead of keeping
   * them from the forward pass. It saves activation memory and costs one more forward pass per
   * step. Default: on for QLoRA, off for LoRA (see `resolveGradientCheckpointing`).
   */
  gradientCheckpointing: boolean;
  /**
   * Memory budget for one attention score matrix, in bytes; queries are processed in chunks that
   * fit it. Undefined computes attention in one piece.
   */
  maxAttentionBytes?: number;
  /** Prompts to generate from before and after training, for the result page. */
  samplePrompts?: string[];
  backend?: string;
}

/** Upper limit of `maxAttentionBytes`, in MiB (1 TiB): the CLI flag and the form take MiB. */
export const MAX_ATTENTION_MIB = 1024 * 1024;

/**
 * Converts an attention memory budget from MiB to whole bytes, rounding up so that any positive
 * budget stays positive. Zero, negative and NaN inputs pass through for validation to reject.
 */
export function attentionBytesFromMiB(mebibytes: number): number {
  return Math.ceil(mebibytes * 1024 * 1024);
}

export const DEFAULT_TRAIN_CONFIG: Omit<TrainConfig, 'modelPath'> = {
  validationSplit: 0.1,
  method: 'lora',
  lora: {
    r: 8,
    loraAlpha: 16,
    loraDropout: 0.05,
    targetModules: ['q_proj', 'v_proj'],
    useRslora: false,
    initLoraWeights: 'kaiming',
  },
  learningRate: 2e-4,
  weightDecay: 0,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  schedule: 'linear',
  warmupSteps: 0,
  maxSteps: 0,
  epochs: 1,
  batchSize: 4,
  gradientAccumulationSteps: 1,
  maxGradNorm: 1,
  maxSeqLength: 512,
  trainOnPrompt: false,
  packing: false,
  evalSteps: 50,
  saveSteps: 100,
  seed: 42,
  // The LoRA default. Code that merges a partial config over these defaults sets this field with
  // resolveGradientCheckpointing, so a QLoRA config that leaves it unset gets `true`.
  gradientCheckpointing: false,
};

/**
 * Returns the gradient checkpointing setting of a run: `explicit` when the user set it, otherwise
 * on for QLoRA and off for LoRA. The QLoRA default follows PEFT, whose
 * `prepare_model_for_kbit_training` has `use_gradient_checkpointing=True`, and the QLoRA authors'
 * training script (`qlora.py` in artidoro/qlora), which turns it on by default.
 */
export function resolveGradientCheckpointing(method: Method, explicit: boolean | undefined): boolean {
  return explicit ?? method === 'qlora';
}
