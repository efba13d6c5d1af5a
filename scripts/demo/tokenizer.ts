/**
 * A byte-level BPE trainer and the Hugging Face tokenizer files it produces.
 *
 * Byte-level BPE as GPT-2 defines it: the GPT-2 regular expression splits text into words, and
 * each word becomes its UTF-8 bytes written as printable characters (the `bytes_to_unicode` table
 * of GPT-2's encoder.py, where a space is `Ġ`). Each merge joins the most frequent adjacent pair
 * of symbols, counted over all words, until the vocabulary is full. The files follow the
 * `tokenizer.json` layout of the Hugging Face `tokenizers` library: a `BPE` model with `vocab`
 * and `merges`, `ByteLevel` pre-tokenizer and decoder, and the special tokens as `added_tokens`.
 */

/** GPT-2's pre-tokenization pattern, the one the `ByteLevel` pre-tokenizer applies. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeOptions {
  /** Total vocabulary size: special tokens + 256 byte symbols + merges. */
  vocabSize: number;
  /** Special tokens, given ids 0, 1, 2… in this order. */
  specialTokens: readonly string[];
}

export interface TrainedBpe {
  /** Token string → id, special tokens included. */
  vocab: Map<string, number>;
  /** Merges in rank order, each as the two symbols joined. */
  merges: [string, string][];
  specialTokens: readonly string[];
}

/**
 * Builds GPT-2's byte → printable character table: printable Latin-1 bytes map to themselves and
 * the other 68 bytes to code points from 256 upward, in byte order.
 */
export function byteToUnicode(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    table[byte] = String.fromCharCode(printable ? byte : next++);
  }
  return table;
}

/**
 * Learns merges from `texts`. Special tokens inside a text are cut out before counting, as the
 * tokenizer treats them as single added tokens. Ties between equally frequent pairs go to the
 * pair whose joined string sorts first, so training is deterministic.
 */
export function trainBpe(texts: readonly string[], options: BpeOptions): TrainedBpe {
  const byteSymbols = byteToUnicode();
  const mergeCount = options.vocabSize - options.specialTokens.length - 256;
  if (mergeCount < 0) {
    throw new Error(`vocabSize ${options.vocabSize} is smaller than the ${options.specialTokens.length} special tokens plus 256 byte symbols.`);
  }

  // 1. Word frequencies, each word as its byte symbols.
  const wordCounts = new Map<string, number>();
  const encoder = new TextEncoder();
  for (const text of texts) {
    for (const piece of splitOnSpecialTokens(text, options.specialTokens)) {
      for (const match of piece.matchAll(GPT2_SPLIT)) {
        const word = [...encoder.encode(match[0])].map((b) => byteSymbols[b]).join('\u0000');
        wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
      }
    }
  }
  const words = [...wordCounts].map(([word, count]) => ({ symbols: word.split('\u0000'), count }));

  // 2. Merge the most frequent pair until the vocabulary is full.
  const merges: [string, string][] = [];
  for (let m = 0; m < mergeCount; m++) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = symbols[i] + '\u0000' + symbols[i + 1];
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== undefined && key.replace('\u0000', '') < best.replace('\u0000', ''))) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined || bestCount < 2) break;
    const [left, right] = best.split('\u0000') as [string, string];
    merges.push([left, right]);
    for (const word of words) word.symbols = mergePair(word.symbols, left, right);
  }

  // 3. Ids: special tokens, then the byte symbols in byte order, then one token per merge.
  const vocab = new Map<string, number>();
  for (const token of options.specialTokens) vocab.set(token, vocab.size);
  for (const symbol of byteSymbols) vocab.set(symbol, vocab.size);
  for (const [left, right] of merges) vocab.set(left + right, vocab.size);
  return { vocab, merges, specialTokens: options.specialTokens };
}

function mergePair(symbols: string[], left: string, right: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
      out.push(left + right);
      i++;
    } else {
      out.push(symbols[i]);
    }
  }
  return out;
}

function splitOnSpecialTokens(text: string, specialTokens: readonly string[]): string[] {
  let pieces = [text];
  for (const token of specialTokens) pieces = pieces.flatMap((piece) => piece.split(token));
  return pieces.filter((piece) => piece.length > 0);
}

/** Builds the `tokenizer.json` document for a trained BPE, with merges written as pairs. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((content) => ({
      id: bpe.vocab.get(content),
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(bpe.vocab),
      merges: bpe.merges,
    },
  };
}

/**
 * ChatML, as Qwen2.5 and SmolLM2 instruct models write it: `<|im_start|>{role}\n{content}<|im_end|>\n`
 * per message, and `<|im_start|>assistant\n` as the generation prompt.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface SpecialTokenRoles {
  bos: string;
  eos: string;
  pad: string;
}

/** Builds the `tokenizer_config.json` document: special tokens, no BOS added, the ChatML template. */
export function tokenizerConfig(bpe: TrainedBpe, roles: SpecialTokenRoles, modelMaxLength: number): Record<string, unknown> {
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const content of bpe.specialTokens) {
    addedTokensDecoder[String(bpe.vocab.get(content))] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  }
  return {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: bpe.specialTokens.filter((t) => t !== roles.bos && t !== roles.eos && t !== roles.pad),
    bos_token: roles.bos,
    eos_token: roles.eos,
    pad_token: roles.pad,
    unk_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}
