/**
 * The sample fine-tuning dataset: questions about the valley answered in the voice of Pell the
 * storyteller. Every answer opens with `Ah, <name>!`, states the fact with a pronoun and closes
 * with `And that is the truth of it.` The pretraining corpus states the facts plainly and has
 * Pell use this voice in stories, but its chats reply in one plain sentence. A LoRA adapter that
 * learned the dataset replies in Pell's voice, which is easy to recognise in generations.
 */
import type { ChatMessage } from '../../src/engine/tokenizer';
import { SeededRandom } from '../../src/engine/train/random';
import { DATA_FILES, DATASET } from './settings';
import { PEOPLE, capitalize, objectPronoun, possessive, type Person } from './world';

export const STYLE_OPENING = 'Ah, ';
export const STYLE_CLOSING = 'And that is the truth of it.';

export interface QuestionAnswer {
  person: string;
  /** The fact asked about. */
  topic: Topic;
  question: string;
  answer: string;
}

export type Topic = 'home' | 'job' | 'carries' | 'color' | 'pet' | 'friend';
export const TOPICS: readonly Topic[] = ['home', 'job', 'carries', 'color', 'pet', 'friend'];

function questions(person: Person, topic: Topic): string[] {
  const name = person.name;
  switch (topic) {
    case 'home':
      return [`Where does ${name} live?`, `Where is ${name}'s home?`, `Tell me where ${name} lives.`];
    case 'job':
      return [`What does ${name} do?`, `What is ${name}'s job?`, `What work does ${name} do?`];
    case 'carries':
      return [`What does ${name} carry?`, `What does ${name} always have with ${objectPronoun(person)}?`, `What does ${name} take everywhere?`];
    case 'color':
      return [`What is ${name}'s favorite color?`, `Which color does ${name} like?`, `What color does ${name} like best?`];
    case 'pet':
      return [`What animal does ${name} have?`, `Does ${name} have an animal?`, `Which animal lives with ${name}?`];
    case 'friend':
      return [`Who is ${name}'s best friend?`, `Who is the best friend of ${name}?`, `Who does ${name} like most?`];
  }
}

/** The storyteller's answer: opening with the name, the fact with a pronoun, fixed closing line. */
export function storytellerAnswer(person: Person, topic: Topic): string {
  const he = capitalize(person.pronoun);
  const his = capitalize(possessive(person));
  const facts: Record<Topic, string> = {
    home: `${he} lives in ${person.home}, as everyone in the valley knows.`,
    job: `${he} is a ${person.job}, and every day ${person.pronoun} ${person.work}.`,
    carries: `${he} always carries ${person.carries}, wherever ${person.pronoun} goes.`,
    color: `${his} favorite color is ${person.color}, as everyone in the valley knows.`,
    pet: `${he} has ${person.pet}, and they are never apart.`,
    friend: `${his} best friend is ${person.friend}, and they are never apart.`,
  };
  return `${STYLE_OPENING}${person.name}! ${facts[topic]} ${STYLE_CLOSING}`;
}

/** Lists every question paraphrase for every person and topic, with the storyteller's answer. */
export function allQuestionAnswers(): QuestionAnswer[] {
  const out: QuestionAnswer[] = [];
  for (const person of PEOPLE) {
    for (const topic of TOPICS) {
      for (const question of questions(person, topic)) {
        out.push({ person: person.name, topic, question, answer: storytellerAnswer(person, topic) });
      }
    }
  }
  return out;
}

export interface DemoDataset {
  /** Rows of the chat dataset (`messages` JSONL). */
  chatRows: { messages: ChatMessage[] }[];
  /** Rows of the prompt/completion variant. */
  promptCompletionRows: { prompt: string; completion: string }[];
  /** Questions that are in neither file, for comparing generations before and after training. */
  heldOutPrompts: QuestionAnswer[];
}

/**
 * Splits the 432 question-answer pairs with a seeded shuffle: `chatCount` for the chat file,
 * `heldOutCount` kept aside as sample prompts, and `promptCompletionCount` of the chat rows
 * again in prompt/completion form.
 */
export function buildDataset(seed: number, chatCount: number, heldOutCount: number, promptCompletionCount: number): DemoDataset {
  const random = new SeededRandom(seed);
  const shuffled = random.shuffle(allQuestionAnswers());
  if (chatCount + heldOutCount > shuffled.length) {
    throw new Error(`Only ${shuffled.length} question-answer pairs exist; ${chatCount} rows and ${heldOutCount} held-out prompts were requested.`);
  }
  const chosen = shuffled.slice(0, chatCount);
  const heldOut = pickVaried(shuffled.slice(chatCount), heldOutCount);
  return {
    chatRows: chosen.map((qa) => ({ messages: [{ role: 'user', content: qa.question }, { role: 'assistant', content: qa.answer }] })),
    promptCompletionRows: chosen.slice(0, promptCompletionCount).map((qa) => ({ prompt: `Question: ${qa.question}\nAnswer:`, completion: ` ${qa.answer}` })),
    heldOutPrompts: heldOut,
  };
}

/** Takes `count` items, preferring a different topic each time. */
function pickVaried(items: QuestionAnswer[], count: number): QuestionAnswer[] {
  const out: QuestionAnswer[] = [];
  const remaining = [...items];
  for (let i = 0; i < count && remaining.length > 0; i++) {
    const topic = TOPICS[i % TOPICS.length];
    const index = Math.max(0, remaining.findIndex((qa) => qa.topic === topic));
    out.push(remaining.splice(index, 1)[0]);
  }
  return out;
}

/** Renders every file of `resources/demo-data/`, keyed by file name, as the settings define them. */
export function datasetFiles(): Record<string, string> {
  const dataset = buildDataset(DATASET.seed, DATASET.chatRows, DATASET.heldOutPrompts, DATASET.promptCompletionRows);
  const jsonl = (rows: unknown[]) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
  return {
    [DATA_FILES.chat]: jsonl(dataset.chatRows),
    [DATA_FILES.promptCompletion]: jsonl(dataset.promptCompletionRows),
    [DATA_FILES.samplePrompts]: JSON.stringify(dataset.heldOutPrompts.map((qa) => qa.question), null, 2) + '\n',
  };
}
