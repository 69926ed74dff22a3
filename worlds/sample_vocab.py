"""Word lists of the sample world: topic themes, noise words, names, countries and languages."""

# Each theme: (words that carry the topic into titles and descriptions, genre names).
# Words are unique across themes so that shared words between items mean a shared topic.
# Every theme has 18 words and 4 genres: the catalogue indexes them as a grid.
THEMES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("orbit", "galaxy", "rocket", "astronaut", "planet", "comet", "nebula", "telescope", "moon",
      "cosmos", "gravity", "mars", "eclipse", "satellite", "meteor", "asteroid", "solar", "lunar"),
     ("astronomy", "space exploration", "science fiction", "physics")),
    (("murder", "detective", "evidence", "trial", "witness", "suspect", "alibi", "heist", "forensic",
      "verdict", "prison", "fugitive", "ransom", "motive", "jury", "confession", "cold case", "crime"),
     ("true crime", "mystery", "thriller", "law")),
    (("kitchen", "recipe", "spice", "bread", "flavor", "chef", "feast", "oven", "pasta", "baking",
      "sauce", "dinner", "vegetable", "pantry", "ferment", "taste", "butter", "cookbook"),
     ("food", "cooking", "lifestyle", "restaurants")),
    (("empire", "roman", "pharaoh", "dynasty", "legion", "ancient", "temple", "conquest", "medieval",
      "castle", "crusade", "archive", "chronicle", "revolution", "century", "ruins", "emperor", "siege"),
     ("history", "biography", "war", "archaeology")),
    (("startup", "investor", "capital", "stock", "economy", "founder", "profit", "strategy",
      "leadership", "venture", "brand", "negotiation", "wealth", "inflation", "trade", "company",
      "career", "dividend"),
     ("business", "finance", "entrepreneurship", "careers")),
    (("meditation", "calm", "breath", "sleep", "mindful", "anxiety", "healing", "yoga", "gratitude",
      "therapy", "stress", "wellbeing", "rest", "clarity", "morning", "self-care", "focus", "balance"),
     ("wellness", "self-help", "mental health", "meditation music")),
    (("dragon", "wizard", "sword", "quest", "spell", "elf", "prophecy", "throne", "realm", "sorcery",
      "knight", "enchanted", "oracle", "rune", "beast", "mage", "dungeon", "crown"),
     ("fantasy", "epic fantasy", "young adult", "adventure")),
    (("love", "heart", "kiss", "wedding", "summer", "letters", "desire", "promise", "affair", "bride",
      "passion", "lovers", "sweetheart", "moonlight", "vows", "flirt", "forever", "embrace"),
     ("romance", "drama", "contemporary fiction", "love songs")),
    (("football", "goal", "league", "coach", "striker", "season", "stadium", "match", "champion",
      "transfer", "derby", "keeper", "tactics", "cup", "penalty", "referee", "fans", "playoff"),
     ("sports", "football", "sports news", "fitness")),
    (("algorithm", "robot", "software", "data", "network", "code", "silicon", "machine learning",
      "cloud", "privacy", "chip", "gadget", "hacker", "internet", "automation", "neural", "compiler",
      "server"),
     ("technology", "computing", "artificial intelligence", "gadgets")),
    (("forest", "ocean", "wolf", "river", "mountain", "bird", "wilderness", "whale", "climate",
      "jungle", "species", "glacier", "reef", "savanna", "migration", "rainforest", "eagle", "meadow"),
     ("nature", "environment", "wildlife", "ambient")),
    (("joke", "laugh", "stand-up", "sketch", "parody", "prank", "satire", "sitcom", "punchline",
      "improv", "banter", "roast", "absurd", "giggle", "comic", "farce", "blooper", "witty"),
     ("comedy", "entertainment", "improv comedy", "satire")),
    (("election", "senate", "policy", "debate", "campaign", "vote", "parliament", "minister",
      "democracy", "reform", "diplomacy", "president", "scandal", "protest", "headline", "opinion",
      "summit", "congress"),
     ("news", "politics", "current affairs", "society")),
    (("saxophone", "trumpet", "swing", "bebop", "blues", "improvisation", "piano", "upright bass",
      "quartet", "brass", "smooth", "standard", "solo", "harlem", "velvet", "speakeasy", "trombone",
      "scat"),
     ("jazz", "blues", "soul", "big band")),
    (("techno", "rave", "synth", "bassline", "house", "trance", "neon", "pulse", "loop", "remix",
      "festival", "drop", "dancefloor", "laser", "circuit", "echo", "strobe", "afterparty"),
     ("electronic", "dance", "techno", "house music")),
    (("guitar", "thunder", "riot", "amplifier", "rebel", "highway", "fire", "storm", "steel",
      "leather", "drum", "iron", "rage", "anthem", "electric", "outlaw", "distortion", "mosh"),
     ("rock", "metal", "punk", "alternative")),
    (("symphony", "sonata", "concerto", "orchestra", "violin", "opera", "aria", "cello", "overture",
      "prelude", "nocturne", "waltz", "baroque", "fugue", "requiem", "chamber", "maestro", "serenade"),
     ("classical", "opera", "instrumental", "soundtrack")),
    (("rhyme", "street", "flow", "cypher", "hustle", "block", "mic", "crew", "verse", "freestyle",
      "grind", "gold chain", "boom bap", "bars", "hood", "trap", "legacy", "mixtape"),
     ("hip-hop", "rap", "r&b", "urban")),
    (("cowboy", "prairie", "banjo", "whiskey", "ranch", "dust", "porch", "ballad", "harvest",
      "fiddle", "truck", "hometown", "barn", "sunset", "wagon", "creek", "heartland", "campfire"),
     ("country", "folk", "americana", "bluegrass")),
    (("parenting", "toddler", "baby", "family", "school", "bedtime", "siblings", "teen", "mother",
      "father", "childhood", "lullaby", "homework", "kids", "nursery", "growing up", "patience",
      "routine"),
     ("kids and family", "parenting", "education", "children's stories")),
    (("ghost", "haunted", "shadow", "nightmare", "curse", "demon", "graveyard", "creature", "scream",
      "blood", "witch", "possession", "fog", "attic", "zombie", "crypt", "darkness", "vampire"),
     ("horror", "supernatural", "paranormal", "dark fiction")),
    (("journey", "passport", "island", "backpack", "road trip", "voyage", "beach", "train",
      "culture", "flight", "hostel", "desert", "map", "border", "coast", "expedition", "souvenir",
      "nomad"),
     ("travel", "culture", "places", "world music")),
    (("ethics", "reason", "truth", "mind", "virtue", "stoic", "existence", "logic", "meaning",
      "consciousness", "freedom", "wisdom", "socrates", "paradox", "soul", "morality", "knowledge",
      "doubt"),
     ("philosophy", "spirituality", "religion", "ideas")),
    (("brain", "memory", "behavior", "emotion", "psychology", "bias", "decision", "experiment",
      "evolution", "genetics", "cell", "chemistry", "discovery", "theory", "laboratory", "research",
      "atom", "molecule"),
     ("science", "psychology", "popular science", "medicine")),
]

# Off-topic filler so that text is not a perfect topic label.
NOISE_WORDS: tuple[str, ...] = (
    "story", "life", "voices", "world", "new", "guide", "secrets", "days", "night", "time", "home",
    "people", "big", "little", "first", "last", "golden", "hidden", "lost", "true", "simple",
    "modern", "wild", "quiet", "bright", "deep", "long", "short", "great", "small", "open", "city",
    "road", "light", "water", "stone", "paper", "glass", "winter", "spring", "autumn", "tomorrow",
    "yesterday", "everything", "nothing", "always", "never", "inside", "beyond", "between",
)

TYPE_PHRASES: dict[str, tuple[str, ...]] = {
    "music": ("A track about", "A song of", "Sounds of", "An anthem for"),
    "podcast": ("Weekly conversations about", "A show exploring", "Episodes on", "Talks about"),
    "audiobook": ("A novel of", "The story of", "A book about", "An account of"),
}

PODCAST_SHOW_WORDS: tuple[str, ...] = (
    "Podcast", "Hour", "Show", "Talk", "Weekly", "Files", "Report", "Sessions", "Radio", "Club",
)

FIRST_NAMES: tuple[str, ...] = (
    "Ada", "Ben", "Clara", "Diego", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor",
    "Wen", "Xavier", "Yara", "Zoe", "Amir", "Bea", "Carl", "Dana", "Emil", "Fatima", "Gus", "Hana",
    "Ivan", "Jade", "Kofi", "Lena", "Marco", "Nina", "Omar", "Priya", "Rafael", "Sofia", "Tomas",
    "Vera", "Will", "Yuki",
)
LAST_NAMES: tuple[str, ...] = (
    "Abbott", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hayes", "Ito", "Jensen",
    "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinlan", "Rossi", "Silva",
    "Tanaka", "Ueda", "Varga", "Walsh", "Xu", "Young", "Zimmer", "Alvarez", "Brandt", "Chen",
    "Diaz", "Evans", "Ferreira", "Gomez", "Holm", "Iqbal", "Jansen", "Kim", "Lindqvist", "Murphy",
    "Novak", "Olsen", "Park", "Reyes", "Schmidt", "Torres", "Vogel", "Weber", "Yilmaz",
)

# country, its language, share of users
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "en", 0.25), ("GB", "en", 0.08), ("CA", "en", 0.04), ("AU", "en", 0.03),
    ("IN", "en", 0.06), ("DE", "de", 0.09), ("AT", "de", 0.01), ("FR", "fr", 0.07),
    ("ES", "es", 0.05), ("MX", "es", 0.06), ("AR", "es", 0.02), ("BR", "pt", 0.08),
    ("SE", "sv", 0.03), ("NL", "nl", 0.03), ("JP", "ja", 0.05), ("IT", "it", 0.05),
)
# item language, share of items
LANGUAGES: tuple[tuple[str, float], ...] = (
    ("en", 0.55), ("es", 0.10), ("de", 0.08), ("pt", 0.07), ("fr", 0.06), ("ja", 0.05),
    ("it", 0.04), ("sv", 0.025), ("nl", 0.025),
)

AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("18-24", 0.24), ("25-34", 0.30), ("35-44", 0.20), ("45-54", 0.14), ("55+", 0.12),
)
PLANS: tuple[tuple[str, float], ...] = (
    ("free", 0.45), ("premium", 0.35), ("family", 0.12), ("student", 0.08),
)
