"""Rule health: for every classification and routing rule, the tasks of a period it decided,
how many of them people corrected (rerouted, reassigned, or reclassified, from Needs review
too), where those went instead, and for rules above the target their most common correction
in one sentence. Aggregate queries, like the dashboard's (`clinicdesk.dashboard.selectors`).

What a rule decided: a routing rule, the tasks whose `routed_by_rule_id` it is (the rule that
first routed the task, also recorded on its ROUTED event); a classification rule, the tasks
whose first ROUTED event lists it in `explanation["classification_rule_ids"]`. A correction is
a REROUTED, REASSIGNED or RECLASSIFIED event with a person as actor (moves by the escalation
sweep do not count); each task counts once, by its first correction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from clinicdesk.dashboard.selectors import PERIOD_TASKS, REROUTE_TARGET, Scope, fetch_rows, share
from queues.models import Queue
from routing.models import ClassificationRule, RoutingRule

RULE_REROUTE_TARGET = REROUTE_TARGET
# Corrections of a routing decision made by a person.
CORRECTION_KINDS = ("rerouted", "reassigned", "reclassified")


@dataclass
class RuleHealth:
    kind: str  # "routing" or "classification"
    rule_id: int
    name: str
    rule_set_version: int | None
    decided: int
    corrected: int
    destinations: list[tuple[str, int]]  # where corrected tasks went, most first
    top_destination: int | None = None  # queue id of the first; 0: reassigned in the queue
    sentence: str = ""

    @property
    def rate(self) -> float | None:
        return share(self.corrected, self.decided)

    @property
    def flagged(self) -> bool:
        return self.rate is not None and self.rate > RULE_REROUTE_TARGET


# The period's tasks with, per task, the rules that decided it (its routing rule, and the
# classification rules recorded on its first ROUTED event) and the first correction a person
# made: reroute, reassignment or reclassification (from Needs review too). `dest` is where the
# corrected task went: its new queue, 0 for a reassignment within the queue, -1 uncorrected.
RULE_BASE_SQL = f"""
WITH p AS MATERIALIZED ({PERIOD_TASKS}),
routed AS (
    SELECT DISTINCT ON (e.task_id) e.task_id, e.explanation -> 'classification_rule_ids' AS ids
      FROM queues_taskevent e JOIN p ON p.id = e.task_id
     WHERE e.kind = 'routed' AND e.created_at >= %(start)s
     ORDER BY e.task_id, e.created_at, e.id
), fix AS (
    SELECT DISTINCT ON (e.task_id) e.task_id, coalesce(e.to_queue_id, 0) AS dest
      FROM queues_taskevent e JOIN p ON p.id = e.task_id
     WHERE e.kind IN {CORRECTION_KINDS} AND e.actor_id IS NOT NULL AND e.created_at >= %(start)s
     ORDER BY e.task_id, e.created_at, e.id
), decided AS (
    SELECT 'routing' AS kind, p.routed_by_rule_id AS rule_id, p.id AS task_id
      FROM p WHERE p.routed_by_rule_id IS NOT NULL
    UNION ALL
    SELECT 'classification', r.rule_id::int, routed.task_id
      FROM routed CROSS JOIN LATERAL jsonb_array_elements_text(
               CASE WHEN jsonb_typeof(routed.ids) = 'array' THEN routed.ids ELSE '[]' END
           ) AS r(rule_id)
), judged AS (
    SELECT d.kind, d.rule_id, d.task_id, coalesce(fix.dest, -1) AS dest
      FROM decided d LEFT JOIN fix ON fix.task_id = d.task_id
)
"""

RULE_COUNTS_SQL = (
    RULE_BASE_SQL + "SELECT kind, rule_id, dest, count(*) FROM judged GROUP BY 1, 2, 3"
)

# Words people do not mean anything by; phrases made only of them are not offered.
STOPWORDS = [
    *("the", "and", "for", "with", "from", "this", "that", "your", "our", "you", "are"),
    *("was", "were", "has", "have", "had", "not", "but", "about", "please", "can", "could"),
    *("would", "will", "need", "needs", "needed", "want", "wants", "into", "onto", "over"),
    *("what", "when", "who", "how", "why", "its", "his", "her", "their", "them", "they"),
    *("she", "him", "per", "via", "re", "fw", "fwd"),
]
# Of each flagged rule, the subjects of at most this many tasks moved to its most frequent
# destination and of as many of its other tasks (the latest) are read for the phrase.
PHRASE_SAMPLE = 2000

# The words and two-word phrases of the sampled subjects, with how many moved tasks and how
# many other tasks mention each; a word that is part of a sampled task's patient name is never
# a candidate, so no name can reach the sentence.
RULE_PHRASES_SQL = (
    RULE_BASE_SQL
    + """, flagged AS (
    SELECT * FROM unnest(%(kinds)s::text[], %(rule_ids)s::int[], %(dests)s::int[])
           AS f(kind, rule_id, top_dest)
), sample AS (
    SELECT kind, rule_id, task_id, moved FROM (
        SELECT j.kind, j.rule_id, j.task_id, j.dest = f.top_dest AS moved,
               row_number() OVER (PARTITION BY j.kind, j.rule_id, j.dest = f.top_dest
                                  ORDER BY j.task_id DESC) AS n
          FROM judged j JOIN flagged f ON f.kind = j.kind AND f.rule_id = j.rule_id
    ) AS s WHERE n <= %(sample)s
), words AS (
    SELECT s.kind, s.rule_id, s.task_id, s.moved, w.word, w.pos
      FROM sample s JOIN p ON p.id = s.task_id
     CROSS JOIN LATERAL regexp_matches(lower(p.subject), '[a-z]+', 'g')
           WITH ORDINALITY AS m(match, pos)
     CROSS JOIN LATERAL (SELECT m.match[1] AS word, m.pos) AS w
), names AS (
    SELECT DISTINCT m.match[1] AS word
      FROM sample s JOIN p ON p.id = s.task_id
     CROSS JOIN LATERAL regexp_matches(lower(p.patient_name), '[a-z]+', 'g') AS m(match)
), pairs AS (
    SELECT kind, rule_id, task_id, moved, word,
           lead(word) OVER (PARTITION BY kind, rule_id, task_id ORDER BY pos) AS next_word
      FROM words
), phrases AS (
    SELECT kind, rule_id, task_id, moved, word AS phrase FROM pairs
     WHERE length(word) >= 3 AND word <> ALL(%(stopwords)s)
    UNION
    SELECT kind, rule_id, task_id, moved, word || ' ' || next_word FROM pairs
     WHERE next_word IS NOT NULL AND length(word) >= 2 AND length(next_word) >= 2
       AND NOT (word = ANY(%(stopwords)s) AND next_word = ANY(%(stopwords)s))
)
SELECT kind, rule_id, phrase, count(*) FILTER (WHERE moved), count(*) FILTER (WHERE NOT moved)
  FROM phrases
 WHERE NOT EXISTS (SELECT 1 FROM names
                    WHERE names.word = ANY(string_to_array(phrases.phrase, ' ')))
 GROUP BY 1, 2, 3
HAVING count(*) FILTER (WHERE moved) >= 2
"""
)


def _queue_names(ids) -> dict[int, str]:
    return dict(Queue.objects.filter(pk__in=ids).values_list("id", "name"))


def _destination_label(dest: int, queues: dict[int, str]) -> str:
    if dest == 0:
        return "another person in the same queue"
    return queues.get(dest, f"queue #{dest}")


def rule_health(scope: Scope) -> list[RuleHealth]:
    """Every classification and routing rule that decided tasks of the period: how many, how
    many people corrected, where those went; flagged rules get their correction sentence."""
    counts: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)
    for kind, rule_id, dest, n in fetch_rows(RULE_COUNTS_SQL, scope.params):
        counts[(kind, rule_id)][dest] = n
    rules = {
        "routing": RoutingRule.objects.select_related("rule_set").in_bulk(
            [r for k, r in counts if k == "routing"]
        ),
        "classification": ClassificationRule.objects.select_related("rule_set").in_bulk(
            [r for k, r in counts if k == "classification"]
        ),
    }
    queues = _queue_names({d for by_dest in counts.values() for d in by_dest if d > 0})
    result = []
    for (kind, rule_id), by_dest in counts.items():
        rule = rules[kind].get(rule_id)
        moved = sorted(
            ((d, n) for d, n in by_dest.items() if d != -1), key=lambda item: (-item[1], item[0])
        )
        result.append(
            RuleHealth(
                kind=kind,
                rule_id=rule_id,
                name=rule.name if rule else f"Rule #{rule_id} (deleted)",
                rule_set_version=rule.rule_set.version if rule else None,
                decided=sum(by_dest.values()),
                corrected=sum(n for _, n in moved),
                destinations=[(_destination_label(d, queues), n) for d, n in moved],
                top_destination=moved[0][0] if moved else None,
            )
        )
    flagged = [r for r in result if r.flagged]
    phrases = _correction_phrases(scope, flagged) if flagged else {}
    for rule in flagged:
        rule.sentence = correction_sentence(rule, phrases.get((rule.kind, rule.rule_id)))
    result.sort(key=lambda r: (not r.flagged, -(r.rate or 0), -r.decided, r.kind, r.name))
    return result


@dataclass(frozen=True)
class Phrase:
    text: str
    in_moved: int


def _correction_phrases(scope: Scope, flagged: list[RuleHealth]) -> dict[tuple, Phrase]:
    """Per flagged rule, the word or two-word phrase that most sets apart the subjects of the
    tasks moved to its most frequent destination from its other tasks: mentioned by at least
    two moved tasks, by a share of the others at most half its share of the moved ones;
    highest difference of shares first, then two words over one, then alphabetical."""
    rows = fetch_rows(
        RULE_PHRASES_SQL,
        {
            **scope.params,
            "kinds": [r.kind for r in flagged],
            "rule_ids": [r.rule_id for r in flagged],
            "dests": [r.top_destination for r in flagged],
            "sample": PHRASE_SAMPLE,
            "stopwords": STOPWORDS,
        },
    )
    sizes = {}
    for rule in flagged:
        moved = rule.destinations[0][1] if rule.destinations else 0
        sizes[(rule.kind, rule.rule_id)] = (
            min(moved, PHRASE_SAMPLE),
            min(rule.decided - moved, PHRASE_SAMPLE),
        )
    candidates: dict[tuple, list[tuple]] = defaultdict(list)
    for kind, rule_id, phrase, in_moved, in_others in rows:
        moved_n, others_n = sizes[(kind, rule_id)]
        moved_share = in_moved / moved_n if moved_n else 0.0
        others_share = in_others / others_n if others_n else 0.0
        if others_share > moved_share / 2:
            continue
        rank = (-round(moved_share - others_share, 9), " " not in phrase, -in_moved, phrase)
        candidates[(kind, rule_id)].append((rank, Phrase(phrase, in_moved)))
    return {key: min(found)[1] for key, found in candidates.items()}


def correction_sentence(rule: RuleHealth, phrase: Phrase | None) -> str:
    """ "12 of 40 tasks routed by 'Lab results' were moved to Medical records: 9 mention
    'records request'"."""
    if not rule.destinations:
        return ""
    where, n = rule.destinations[0]
    verb = "routed" if rule.kind == "routing" else "classified"
    were = "was" if n == 1 else "were"
    moved = (
        f"{were} reassigned to another person in the same queue"
        if where == "another person in the same queue"
        else f"{were} moved to {where}"
    )
    task_word = "task" if rule.decided == 1 else "tasks"
    sentence = f"{n} of {rule.decided} {task_word} {verb} by '{rule.name}' {moved}"
    if phrase is not None:
        sentence += f": {phrase.in_moved} mention '{phrase.text}'"
    return sentence
