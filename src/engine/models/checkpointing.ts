/**
 * Gradient checkpointing per transformer block: the forward pass keeps only each block's input,
 * and the backward pass runs the block again to get its gradients. Activation memory drops from
 * every intermediate of every block to the block inputs plus one block's intermediates, for
 * about one extra forward pass of compute.
 *
 * tfjs's `customGrad` returns gradients for its explicit inputs only, and a block reads the
 * LoRA variables from closures. So each checkpointed block becomes one custom-gradient operation
 * whose inputs are the hidden state and the trainable variables the block reads, found by
 * recording the block's forward pass on a private tape. Its gradient function recomputes the
 * block under `gradients` and returns the gradient of every one of those inputs, and the engine
 * adds them into the outer gradients as for any other operation.
 *
 * Two more things must hold for the recomputation to equal the original pass:
 * - Dropout masks: LoRA dropout draws a seed per call from `ForwardContext.nextSeed`. The
 *   `context` of a `GradientCheckpointing` records the seeds each block draws in the forward pass
 *   and replays them when the block is recomputed, so the seed sequence and the masks are exactly
 *   those of a run without checkpointing.
 * - Captured tensors: a block also reads tensors created earlier in the forward pass (the
 *   attention mask, RoPE tables). The forward tidy would dispose them before the backward pass
 *   runs, so they are kept until `dispose()`, which the caller runs after the gradients.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { ForwardContext } from './linear';

type Block = (hidden: tf.Tensor2D) => tf.Tensor2D;

/** The parts of tfjs's engine internals (tfjs-core 4.22) this module reads and restores. */
interface TapeNode {
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; scopeStack: Array<{ id: number }> };
  isTapeOn(): boolean;
  gradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients?: boolean): { value: T; grads: Array<tf.Tensor | null> };
}

type SeedMode = { kind: 'record'; seeds: number[] } | { kind: 'replay'; seeds: number[]; next: number } | null;

/** The output of a block's forward pass and the tensors it read, found on its private tape. */
interface BlockForward {
  output: tf.Tensor2D;
  /** Trainable variables read by the block, in first-use order. */
  variables: tf.Variable[];
  /** Tensors created before the block, read by it, that an enclosing tidy would dispose. */
  captured: tf.Tensor[];
}

/**
 * One forward and backward pass with checkpointed blocks. Create one per gradient computation,
 * pass `context` and `recomputeBlock` in the forward options, and call `dispose()` after the
 * gradients are computed (also when computing them failed).
 */
export class GradientCheckpointing {
  /** The forward context to use in the checkpointed pass; dropout seeds drawn in blocks are replayed. */
  readonly context: ForwardContext;
  private seedMode: SeedMode = null;
  private readonly kept = new Map<number, tf.Tensor>();

  constructor(parent: ForwardContext) {
    this.context = { training: parent.training, nextSeed: () => this.nextSeed(parent) };
  }

  /**
   * Runs `block(hidden)` so that the backward pass recomputes it: usable as
   * `ForwardOptions.recomputeBlock`. Without a gradient being recorded it is a plain call.
   *
   * NOTE: gradients reach the block's input and the trainable variables it reads. A tensor that is
   * not a variable and that the block captures from outside gets no gradient through it.
   */
  readonly recomputeBlock = (block: Block, hidden: tf.Tensor2D): tf.Tensor2D => {
    const engine = tf.engine() as unknown as EngineInternals;
    if (!engine.isTapeOn()) return block(hidden);

    const seeds: number[] = [];
    const forward = this.recordForward(engine, block, hidden, seeds);
    for (const tensor of forward.captured) this.keepUntilDispose(tensor);

    const checkpointed = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const save = args[args.length - 1] as tf.GradSaveFunc;
      save([args[0] as tf.Tensor]);
      return {
        value: forward.output,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => this.recompute(engine, block, saved[0] as tf.Tensor2D, forward.variables, dy as tf.Tensor2D, seeds),
      };
    });
    return checkpointed(hidden, ...forward.variables) as tf.Tensor2D;
  };

  /**
   * Releases the tensors kept alive for recomputation. A tensor whose tidy scope is still open is
   * handed back to that scope, which disposes it when it ends.
   */
  dispose(): void {
    const engine = tf.engine() as unknown as EngineInternals;
    const openScopes = new Set(engine.state.scopeStack.map((scope) => scope.id));
    for (const tensor of this.kept.values()) {
      if (tensor.isDisposed) continue;
      if (openScopes.has(tensor.scopeId)) tensor.kept = false;
      else tensor.dispose();
    }
    this.kept.clear();
  }

  /** Number of tensors currently kept alive for recomputation. */
  get keptTensorCount(): number {
    return this.kept.size;
  }

  /**
   * Runs the block with the engine's tape pointed at a private tape, then reads from it which
   * variables and outside tensors the block used, and frees the tensors the tape saved.
   */
  private recordForward(engine: EngineInternals, block: Block, hidden: tf.Tensor2D, seeds: number[]): BlockForward {
    const outerTape = engine.state.activeTape;
    const tape: TapeNode[] = [];
    engine.state.activeTape = tape;
    this.seedMode = { kind: 'record', seeds };
    let output: tf.Tensor2D;
    try {
      output = tf.tidy(() => block(hidden));
    } finally {
      engine.state.activeTape = outerTape;
      this.seedMode = null;
      for (const node of tape) tf.dispose(node.saved ?? []);
    }

    const produced = new Set<number>();
    for (const node of tape) for (const tensor of node.outputs) produced.add(tensor.id);
    const openScopes = new Set(engine.state.scopeStack.map((scope) => scope.id));
    const variables = new Map<number, tf.Variable>();
    const captured = new Map<number, tf.Tensor>();
    for (const node of tape) {
      for (const input of Object.values(node.inputs)) {
        if (isVariable(input)) {
          if (input.trainable) variables.set(input.id, input);
        } else if (input !== hidden && !produced.has(input.id) && !input.isDisposed && !input.kept && openScopes.has(input.scopeId)) {
          captured.set(input.id, input);
        }
      }
    }
    return { output, variables: [...variables.values()], captured: [...captured.values()] };
  }

  /**
   * The gradient function of a checkpointed block: recomputes it from its saved input with the
   * recorded dropout seeds and returns the gradients of the input and of each variable.
   */
  private recompute(engine: EngineInternals, block: Block, hidden: tf.Tensor2D, variables: tf.Variable[], dy: tf.Tensor2D, seeds: number[]): tf.Tensor[] {
    // The engine calls gradient functions outside any tidy, so the recomputed activations are freed here.
    return tf.tidy(() => {
      const xs: tf.Tensor[] = [hidden, ...variables];
      // A nested `gradients` call replaces the engine's active tape and sets it to null when it
      // ends. The outer gradient computation still needs its own tape for cleanup.
      const outerTape = engine.state.activeTape;
      const mode: SeedMode = { kind: 'replay', seeds, next: 0 };
      this.seedMode = mode;
      let result: { value: tf.Tensor2D; grads: Array<tf.Tensor | null> };
      try {
        result = engine.gradients(() => block(hidden), xs, dy, true);
      } finally {
        engine.state.activeTape = outerTape;
        this.seedMode = null;
      }
      result.value.dispose();
      if (mode.next !== seeds.length) throw seedMismatch(seeds.length, mode.next);
      return result.grads.map((grad, i) => grad ?? tf.zerosLike(xs[i]));
    });
  }

  private nextSeed(parent: ForwardContext): number {
    const mode = this.seedMode;
    if (mode?.kind === 'replay') {
      if (mode.next >= mode.seeds.length) throw seedMismatch(mode.seeds.length, mode.next + 1);
      return mode.seeds[mode.next++];
    }
    const seed = parent.nextSeed();
    if (mode?.kind === 'record') mode.seeds.push(seed);
    return seed;
  }

  private keepUntilDispose(tensor: tf.Tensor): void {
    if (this.kept.has(tensor.id)) return;
    tf.keep(tensor);
    this.kept.set(tensor.id, tensor);
  }
}

/**
 * Checks for a `tf.Variable` by its fields as well as by class, because a variable made by a
 * second copy of tfjs-core (a CommonJS and an ES module build loaded together) fails `instanceof`
 * and would silently get no gradient.
 */
function isVariable(tensor: tf.Tensor): tensor is tf.Variable {
  const candidate = tensor as Partial<tf.Variable>;
  return tensor instanceof tf.Variable || (typeof candidate.trainable === 'boolean' && typeof candidate.assign === 'function');
}

function seedMismatch(recorded: number, used: number): StudioError {
  return new StudioError(
    'INTERNAL',
    `A checkpointed block drew ${used} dropout seeds when recomputed but ${recorded} in the forward pass.`,
    'The block must make the same dropout calls each time it runs; turn gradient checkpointing off to train meanwhile.',
  );
}
