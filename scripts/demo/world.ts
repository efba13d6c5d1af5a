/**
 * The small world of the demo resources: a valley with 24 people, their homes, jobs, belongings,
 * colors, animals and friends. The pretraining corpus tells stories about it and the sample
 * fine-tuning dataset asks questions about it, so both draw their facts from this one table.
 * Everything here was written for this project.
 */
import { SeededRandom } from '../../src/engine/train/random';

export interface Person {
  name: string;
  /** Subject pronoun, lower case: `she` or `he`. */
  pronoun: 'she' | 'he';
  job: string;
  /** Work of the person, as a verb phrase in the present tense. */
  work: string;
  home: string;
  /** An object with its article, e.g. `a brass key`. */
  carries: string;
  color: string;
  /** An animal with its article. */
  pet: string;
  /** Name of the best friend (another person of the table). */
  friend: string;
}

export const PEOPLE: readonly Person[] = [
  { name: 'Mira', pronoun: 'she', job: 'baker', work: 'bakes bread for the whole village', home: 'the old mill', carries: 'a brass key', color: 'red', pet: 'a gray cat', friend: 'Tobin' },
  { name: 'Tobin', pronoun: 'he', job: 'fisher', work: 'takes his boat out on the lake', home: 'the harbor', carries: 'a fishing net', color: 'blue', pet: 'a brown dog', friend: 'Mira' },
  { name: 'Ada', pronoun: 'she', job: 'smith', work: 'makes nails and horseshoes at the forge', home: 'the stone cottage', carries: 'a small hammer', color: 'orange', pet: 'a white goat', friend: 'Bram' },
  { name: 'Bram', pronoun: 'he', job: 'miller', work: 'grinds wheat into flour', home: 'the river farm', carries: 'a sack of flour', color: 'yellow', pet: 'a black horse', friend: 'Ada' },
  { name: 'Nora', pronoun: 'she', job: 'weaver', work: 'weaves blankets on a wooden loom', home: 'the blue house on the hill', carries: 'a ball of wool', color: 'purple', pet: 'a yellow duck', friend: 'Ivo' },
  { name: 'Ivo', pronoun: 'he', job: 'potter', work: 'shapes bowls and cups from clay', home: 'the market square', carries: 'a clay bowl', color: 'green', pet: 'a spotted rabbit', friend: 'Nora' },
  { name: 'Lena', pronoun: 'she', job: 'beekeeper', work: 'looks after forty hives of bees', home: 'the orchard', carries: 'a jar of honey', color: 'yellow', pet: 'a small owl', friend: 'Otto' },
  { name: 'Otto', pronoun: 'he', job: 'carpenter', work: 'builds tables, chairs and doors', home: 'the forest cabin', carries: 'a wooden ruler', color: 'brown', pet: 'a loud hen', friend: 'Lena' },
  { name: 'Rosa', pronoun: 'she', job: 'shepherd', work: 'walks the sheep up to the high meadow', home: 'the bell tower', carries: 'a wooden flute', color: 'white', pet: 'a brown dog', friend: 'Finn' },
  { name: 'Finn', pronoun: 'he', job: 'lamplighter', work: 'lights the street lamps every evening', home: 'the lighthouse', carries: 'a lantern', color: 'gold', pet: 'a gray cat', friend: 'Rosa' },
  { name: 'Cora', pronoun: 'she', job: 'gardener', work: 'grows beans, roses and tall sunflowers', home: 'the garden gate', carries: 'a green watering can', color: 'green', pet: 'a spotted rabbit', friend: 'Dov' },
  { name: 'Dov', pronoun: 'he', job: 'tailor', work: 'sews coats and mends torn shirts', home: 'the bridge tower', carries: 'a silver needle', color: 'gray', pet: 'a white goat', friend: 'Cora' },
  { name: 'Elsa', pronoun: 'she', job: 'teacher', work: 'teaches the children to read and count', home: 'the school house', carries: 'a book of songs', color: 'blue', pet: 'a small owl', friend: 'Gus' },
  { name: 'Gus', pronoun: 'he', job: 'cook', work: 'makes soup at the inn', home: 'the inn by the road', carries: 'a copper kettle', color: 'red', pet: 'a loud hen', friend: 'Elsa' },
  { name: 'Hana', pronoun: 'she', job: 'doctor', work: 'helps people who are sick', home: 'the white house by the well', carries: 'a bag of herbs', color: 'white', pet: 'a yellow duck', friend: 'Jory' },
  { name: 'Jory', pronoun: 'he', job: 'painter', work: 'paints pictures of the valley', home: 'the attic above the bakery', carries: 'a box of paints', color: 'purple', pet: 'a gray cat', friend: 'Hana' },
  { name: 'Kit', pronoun: 'she', job: 'mail carrier', work: 'brings letters to every house', home: 'the post office', carries: 'a leather bag', color: 'orange', pet: 'a brown dog', friend: 'Lio' },
  { name: 'Lio', pronoun: 'he', job: 'farmer', work: 'plants potatoes and cabbages', home: 'the big red barn', carries: 'a straw hat', color: 'yellow', pet: 'a black horse', friend: 'Kit' },
  { name: 'Maud', pronoun: 'she', job: 'librarian', work: 'keeps the old books in order', home: 'the old library', carries: 'a map of the valley', color: 'brown', pet: 'a small owl', friend: 'Ned' },
  { name: 'Ned', pronoun: 'he', job: 'boat builder', work: 'builds small boats by the lake', home: 'the boat shed', carries: 'a coil of rope', color: 'blue', pet: 'a yellow duck', friend: 'Maud' },
  { name: 'Oona', pronoun: 'she', job: 'singer', work: 'sings at the inn on market days', home: 'the house with the green door', carries: 'a small drum', color: 'gold', pet: 'a white goat', friend: 'Quill' },
  { name: 'Quill', pronoun: 'he', job: 'clock maker', work: 'repairs clocks and watches', home: 'the clock shop', carries: 'a silver bell', color: 'gray', pet: 'a loud hen', friend: 'Oona' },
  { name: 'Sela', pronoun: 'she', job: 'guard', work: 'watches the north gate at night', home: 'the north gate', carries: 'a long spear', color: 'red', pet: 'a black horse', friend: 'Pell' },
  { name: 'Pell', pronoun: 'he', job: 'storyteller', work: 'tells old stories by the fire', home: 'the hut by the pond', carries: 'a walking stick', color: 'green', pet: 'a spotted rabbit', friend: 'Sela' },
];

/** Places people visit in the stories (every home is also a place). */
export const PLACES: readonly string[] = [
  ...new Set([...PEOPLE.map((p) => p.home), 'the lake', 'the high meadow', 'the forge', 'the well', 'the old bridge', 'the pine forest', 'the river', 'the hill']),
];

export const FOUND_THINGS = ['a lost glove', 'a round stone', 'a blue feather', 'an old coin', 'a torn letter', 'a tiny shoe', 'a basket of apples', 'a broken cup', 'a wet hat', 'a bird nest'];
export const WEATHER = ['sunny', 'cold', 'windy', 'rainy', 'warm', 'foggy', 'bright', 'quiet'];
export const TIMES = ['In the morning', 'At noon', 'In the afternoon', 'In the evening', 'Early one day', 'Late one night', 'On market day', 'After the rain'];
export const FEELINGS = ['happy', 'tired', 'surprised', 'glad', 'hungry', 'calm', 'curious', 'proud'];
export const SNACKS = ['bread', 'soup', 'apples', 'cheese', 'honey cake', 'plums', 'warm milk', 'fish'];

export function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Object pronoun for a subject pronoun. */
export function objectPronoun(person: Person): string {
  return person.pronoun === 'she' ? 'her' : 'him';
}

/** Possessive pronoun for a subject pronoun. */
export function possessive(person: Person): string {
  return person.pronoun === 'she' ? 'her' : 'his';
}

export function personByName(name: string): Person {
  const person = PEOPLE.find((p) => p.name === name);
  if (!person) throw new Error(`No person named ${name} in the world table.`);
  return person;
}

/** Picks an element uniformly at random. */
export function pick<T>(random: SeededRandom, items: readonly T[]): T {
  return items[Math.floor(random.next() * items.length)];
}
