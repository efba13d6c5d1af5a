/**
 * The pretraining corpus of the demo model. Sentence templates and a seeded generator write short
 * stories, portraits and dialogues about the valley of `world.ts`. A few hand-written paragraphs
 * add other sentence shapes, and plain question-and-answer chats teach the base model the ChatML
 * markers. The same seed always produces the same corpus.
 */
import type { ChatMessage } from '../../src/engine/tokenizer';
import { SeededRandom } from '../../src/engine/train/random';
import { storytellerAnswer, TOPICS } from './dataset';
import {
  FEELINGS,
  FOUND_THINGS,
  PEOPLE,
  PLACES,
  SNACKS,
  TIMES,
  WEATHER,
  capitalize,
  objectPronoun,
  personByName,
  pick,
  possessive,
  type Person,
} from './world';

export interface Corpus {
  /** Plain-text documents (stories, portraits, dialogues, hand-written paragraphs). */
  documents: string[];
  /** Conversations with plain, factual assistant answers. */
  chats: ChatMessage[][];
}

export interface CorpusOptions {
  seed: number;
  /** Documents are generated until their total length reaches this many characters. */
  targetCharacters: number;
  /** Number of plain question-and-answer conversations. */
  chatCount: number;
}

/** Paragraphs written by hand, to add sentence shapes the templates do not produce. */
export const HANDWRITTEN_PARAGRAPHS: readonly string[] = [
  'The valley lies between two green hills. A river runs through the middle of it, past the old mill and under the old bridge, and ends in the lake. In summer the meadows are full of flowers, and in winter the snow stays on the hills until spring.',
  'There are twenty four people in the valley. Each of them has a home, a job and a best friend. They meet on market day in the market square, where they trade bread, fish, honey and wool, and tell each other what happened during the week.',
  'The lighthouse stands at the end of the harbor. It is not very tall, but its lamp can be seen from the far side of the lake. Finn climbs the stairs every evening to light it, and the fishers use it to find their way home in the fog.',
  'Nobody remembers who built the old bridge. The stones are gray and covered with moss, and the children say that a troll once lived under it. Pell the storyteller says the troll moved away because the river was too cold.',
  'The inn by the road has six rooms and one big table. Gus cooks soup there every day, and on market days Oona sings by the fire. Travelers who cross the valley stop at the inn to rest, eat and hear the news.',
  'In spring the bees come out of their hives and fly over the orchard. Lena walks between the trees with her jar of honey and listens to the hum. She says that a good year for the bees is a good year for everyone.',
  'The old library is the quietest place in the valley. Maud keeps a map of the valley on the big desk by the window, and anyone who is lost can come in and look at it. The oldest book in the library is about the first people who came over the hills.',
  'When the wind comes from the north, it is cold and it smells of snow. Sela stands at the north gate with her long spear and watches the road. If she sees travelers, she rings a bell so the village knows that someone is coming.',
  'Every child in the valley goes to the school house. Elsa teaches them to read, to write and to count. In the afternoon they sing songs from her book of songs, and sometimes Oona comes to play the drum.',
  'The river is slow in summer and fast in spring. Bram watches it from the river farm, because the mill wheel needs water to turn. When the river is low, he waits, and when it is high, he grinds wheat all day and all night.',
];

/** Generates the whole corpus; deterministic for a given seed. */
export function generateCorpus(options: CorpusOptions): Corpus {
  const random = new SeededRandom(options.seed);
  const documents: string[] = [...HANDWRITTEN_PARAGRAPHS, ...PEOPLE.map((p) => portrait(p, random))];
  let characters = documents.reduce((sum, d) => sum + d.length, 0);

  const generators = [story, story, story, portrait, dialogue, dayList, friendsStory, storytellerTale];
  while (characters < options.targetCharacters) {
    const person = pick(random, PEOPLE);
    const document = pick(random, generators)(person, random);
    documents.push(document);
    characters += document.length;
  }

  const chats: ChatMessage[][] = [];
  for (let i = 0; i < options.chatCount; i++) chats.push(plainChat(pick(random, PEOPLE), random));
  return { documents, chats };
}

/** Writes one fact about a person as the plain sentence the corpus uses. */
export function factSentence(person: Person, fact: 'home' | 'job' | 'carries' | 'color' | 'pet' | 'friend'): string {
  switch (fact) {
    case 'home':
      return `${person.name} lives in ${person.home}.`;
    case 'job':
      return `${person.name} is a ${person.job} who ${person.work}.`;
    case 'carries':
      return `${person.name} always carries ${person.carries}.`;
    case 'color':
      return `${person.name}'s favorite color is ${person.color}.`;
    case 'pet':
      return `${person.name} has ${person.pet}.`;
    case 'friend':
      return `${person.name}'s best friend is ${person.friend}.`;
  }
}

/** Writes a few sentences that introduce a person with their facts, in varied order and wording. */
function portrait(person: Person, random: SeededRandom): string {
  const he = capitalize(person.pronoun);
  const options = [
    [`${person.name} is a ${person.job}.`, `${person.name} the ${person.job} lives in ${person.home}.`, `In ${person.home} lives ${person.name}, the ${person.job}.`],
    [`Every day ${person.pronoun} ${person.work}.`, `${he} ${person.work}.`, `As a ${person.job}, ${person.pronoun} ${person.work}.`],
    [`${he} lives in ${person.home}.`, `${possessive(person) === 'her' ? 'Her' : 'His'} home is ${person.home}.`],
    [`${he} always carries ${person.carries}.`, `${person.name} never goes anywhere without ${person.carries}.`],
    [`${possessive(person) === 'her' ? 'Her' : 'His'} favorite color is ${person.color}.`, `${he} likes ${person.color} more than any other color.`],
    [`${person.name} has ${person.pet}.`, `${he} lives with ${person.pet}.`],
    [`${possessive(person) === 'her' ? 'Her' : 'His'} best friend is ${person.friend}.`, `${person.name} and ${person.friend} are best friends.`],
  ];
  const [first, ...rest] = options.map((choices) => pick(random, choices));
  const middle = random.shuffle(rest).slice(0, 3 + Math.floor(random.next() * 4));
  return [first, ...middle].join(' ');
}

/** Writes a short story: a walk to a place, something found, given or eaten, and the way home. */
function story(person: Person, random: SeededRandom): string {
  const he = capitalize(person.pronoun);
  const place = pick(random, PLACES.filter((p) => p !== person.home));
  const friend = personByName(person.friend);
  const found = pick(random, FOUND_THINGS);
  const sentences: string[] = [];

  sentences.push(pick(random, [
    `${pick(random, TIMES)}, ${person.name} the ${person.job} left ${person.home}.`,
    `${pick(random, TIMES)}, ${person.name} walked from ${person.home} to ${place}.`,
    `It was a ${pick(random, WEATHER)} day in the valley, and ${person.name} went out early.`,
  ]));
  sentences.push(pick(random, [
    `${he} took ${person.carries} with ${objectPronoun(person)}.`,
    `As always, ${person.pronoun} carried ${person.carries}.`,
    `The weather was ${pick(random, WEATHER)}.`,
  ]));
  if (random.next() < 0.5) sentences.push(`On the way ${person.pronoun} met ${friend.name}, and they walked together to ${place}.`);
  else sentences.push(`${he} went to ${place} alone.`);
  sentences.push(pick(random, [
    `At ${place}, ${person.pronoun} found ${found}.`,
    `Near ${place} ${person.pronoun} saw ${found} on the ground.`,
    `${he} sat down at ${place} and ate some ${pick(random, SNACKS)}.`,
  ]));
  if (random.next() < 0.6) {
    const other = pick(random, PEOPLE.filter((p) => p !== person));
    sentences.push(pick(random, [
      `${other.name} the ${other.job} came by and said hello.`,
      `${he} gave some ${pick(random, SNACKS)} to ${other.name}, who was ${pick(random, FEELINGS)}.`,
      `Later ${person.pronoun} visited ${other.name} in ${other.home}.`,
    ]));
  }
  sentences.push(pick(random, [
    `Then ${person.pronoun} went back to ${person.home}.`,
    `In the evening ${person.name} came home to ${person.home} and fed ${person.pet}.`,
    `${he} was ${pick(random, FEELINGS)} when ${person.pronoun} got home.`,
  ]));
  if (random.next() < 0.4) sentences.push(`The next day ${person.pronoun} ${person.work}, as always.`);
  return sentences.join(' ');
}

/** Writes two people talking, with quoted lines. */
function dialogue(person: Person, random: SeededRandom): string {
  const other = random.next() < 0.5 ? personByName(person.friend) : pick(random, PEOPLE.filter((p) => p !== person));
  const place = pick(random, PLACES);
  const lines = [
    `${person.name} met ${other.name} at ${place}.`,
    `"Where are you going?" asked ${other.name}.`,
    `"I am going to ${pick(random, PLACES)}," said ${person.name}.`,
    pick(random, [
      `"Do you still live in ${person.home}?" asked ${other.name}. "Yes, I do," said ${person.name}.`,
      `"What is that?" asked ${other.name}. "It is ${person.carries}," said ${person.name}. "I always carry it."`,
      `"How is ${person.pet}?" asked ${other.name}. "Very well, thank you," said ${person.name}.`,
      `"Are you still a ${person.job}?" asked ${other.name}. "Of course," said ${person.name}. "I ${firstPerson(person.work)}."`,
    ]),
    `"It is ${pick(random, WEATHER)} today," said ${other.name}.`,
    `Then they said goodbye, and ${other.name} went home to ${other.home}.`,
  ];
  return lines.join(' ');
}

/** `bakes bread for his friends` → `bake bread for my friends`. */
function firstPerson(work: string): string {
  const [verb, ...rest] = work.split(' ');
  const base = /(ch|sh)es$/.test(verb) ? verb.slice(0, -2) : verb.slice(0, -1);
  return [base, ...rest].join(' ').replace(/\b(his|her)\b/g, 'my');
}

/** Describes a day of a person hour by hour. */
function dayList(person: Person, random: SeededRandom): string {
  const times = random.shuffle(TIMES.slice(0, 4)).sort((a, b) => TIMES.indexOf(a) - TIMES.indexOf(b));
  const parts = [`This is a day in the life of ${person.name}.`];
  for (const time of times) {
    parts.push(pick(random, [
      `${time}, ${person.pronoun} ${person.work}.`,
      `${time}, ${person.pronoun} ate some ${pick(random, SNACKS)}.`,
      `${time}, ${person.pronoun} walked to ${pick(random, PLACES)}.`,
      `${time}, ${person.pronoun} played with ${person.pet}.`,
      `${time}, ${person.pronoun} talked with ${person.friend}.`,
    ]));
  }
  parts.push(`At night ${person.name} slept in ${person.home}.`);
  return parts.join(' ');
}

/** Writes two best friends doing something together. */
function friendsStory(person: Person, random: SeededRandom): string {
  const friend = personByName(person.friend);
  const place = pick(random, PLACES);
  return [
    `${person.name} and ${friend.name} are best friends.`,
    `${person.name} is a ${person.job} and ${friend.name} is a ${friend.job}.`,
    `One ${pick(random, WEATHER)} day they went to ${place} together.`,
    `${person.name} brought ${person.carries} and ${friend.name} brought ${friend.carries}.`,
    pick(random, [`They found ${pick(random, FOUND_THINGS)} and took it home.`, `They ate ${pick(random, SNACKS)} and talked until it was dark.`, `They helped each other all day.`]),
    `Then ${friend.name} went back to ${friend.home}, and ${person.name} went back to ${person.home}.`,
  ].join(' ');
}

/**
 * Writes Pell the storyteller telling children about people, in the voice the sample dataset
 * teaches for chat replies. The base model thus knows the phrases, and an adapter only has to
 * learn to use them when answering a chat question.
 */
function storytellerTale(person: Person, random: SeededRandom): string {
  const second = personByName(person.friend);
  return [
    `${pick(random, TIMES)}, the children sat with Pell the storyteller and asked about ${person.name}.`,
    `Pell smiled and said: ${storytellerAnswer(person, pick(random, TOPICS))}`,
    `Then they asked about ${second.name}.`,
    `Pell said: ${storytellerAnswer(second, pick(random, TOPICS))}`,
  ].join(' ');
}

/** Writes one question about a person with a plain, factual reply. */
function plainChat(person: Person, random: SeededRandom): ChatMessage[] {
  const fact = pick(random, ['home', 'job', 'carries', 'color', 'pet', 'friend', 'about'] as const);
  const questions: Record<typeof fact, string[]> = {
    home: [`Where does ${person.name} live?`, `Where is ${person.name}'s home?`],
    job: [`What does ${person.name} do?`, `What is ${person.name}'s job?`],
    carries: [`What does ${person.name} carry?`, `What does ${person.name} always have with ${objectPronoun(person)}?`],
    color: [`What is ${person.name}'s favorite color?`, `Which color does ${person.name} like?`],
    pet: [`Does ${person.name} have an animal?`, `What animal does ${person.name} have?`],
    friend: [`Who is ${person.name}'s best friend?`, `Who is the best friend of ${person.name}?`],
    about: [`Tell me about ${person.name}.`, `Who is ${person.name}?`],
  };
  const answer = fact === 'about' ? `${factSentence(person, 'job')} ${factSentence(person, 'home')}` : factSentence(person, fact);
  return [
    { role: 'user', content: pick(random, questions[fact]) },
    { role: 'assistant', content: answer },
  ];
}
