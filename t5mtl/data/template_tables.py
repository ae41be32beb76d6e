"""The instruction template tables: several templates per task, written for t5mtl.

Real tasks have at least five zero-shot templates each over their raw fields
(TaskInfo.fields); classification tasks answer with verbalizers ("yes" for
entailment, ...). The synthetic suite shares templates built around each
task's own instruction field, plus chain-of-thought templates for the tasks
that explain their answers and inverted templates for tasks whose input
follows from their output. See t5mtl.data.templates for the machinery and
the formats.
"""
from __future__ import annotations

import functools

from t5mtl.data import metrics, synthetic
from t5mtl.data.templates import TaskTemplates, Template
from t5mtl.errors import T5mtlError

T = Template

# ---------------------------------------------------------------- real tasks

GLUE_SST2 = TaskTemplates(
    "glue_sst2",
    (T("Review: {sentence}\nIs this review negative or positive?", "{label}"),
     T("{sentence}\n\nWhat is the sentiment of the text above?", "{label}"),
     T("Decide whether this movie-review snippet is positive or negative: {sentence}",
       "{label}"),
     T('A critic wrote: "{sentence}" How does the critic feel about the film?', "{label}"),
     T("Classify the sentiment of the following phrase.\n{sentence}", "{label}"),
     T("{sentence}\nWas that said in a positive or a negative tone?", "{label}")),
    label_field="label", verbalizers=("negative", "positive"),
    inverse_templates=(
        T("Write a {label} phrase from a movie review.", "{sentence}"),
        T("Give an example of a {label} remark about a film.", "{sentence}"),
        T("Sentiment: {label}\nWrite a snippet of a film review with this sentiment.",
          "{sentence}"),
        T("Compose a short {label} comment a critic might make.", "{sentence}"),
        T("Produce a movie-review phrase whose sentiment is {label}.", "{sentence}")),
)

GLUE_COLA = TaskTemplates(
    "glue_cola",
    (T("Is the following sentence grammatically acceptable English?\n{sentence}", "{label}"),
     T("{sentence}\n\nWould a native speaker accept this sentence as well formed?", "{label}"),
     T("Sentence: {sentence}\nIs this sentence grammatical?", "{label}"),
     T('Check the grammar. Is "{sentence}" a correct English sentence?', "{label}"),
     T("Read the sentence and say whether it is linguistically acceptable: {sentence}",
       "{label}")),
    label_field="label", verbalizers=("no", "yes"),
)

GLUE_STSB = TaskTemplates(
    "glue_stsb",
    (T("How similar are these two sentences, on a scale from 0 to 5?\n"
       "First: {sentence1}\nSecond: {sentence2}", "{label}"),
     T("{sentence1}\n{sentence2}\n\nRate how close in meaning the two sentences above are, "
       "from 0 (unrelated) to 5 (equivalent).", "{label}"),
     T("Sentence A: {sentence1}\nSentence B: {sentence2}\nGive a similarity score between "
       "0 and 5.", "{label}"),
     T('Score from 0 to 5 how close in meaning "{sentence1}" is to "{sentence2}".', "{label}"),
     T("Compare the meaning of two sentences and answer with a number from 0 to 5.\n"
       "1. {sentence1}\n2. {sentence2}", "{label}")),
)

GLUE_QNLI = TaskTemplates(
    "glue_qnli",
    (T("Question: {question}\nSentence: {sentence}\nDoes the sentence contain the answer to "
       "the question?", "{label}"),
     T('Can the question "{question}" be answered from this sentence? {sentence}', "{label}"),
     T("{sentence}\n\nDoes the text above answer this: {question}", "{label}"),
     T("Read the sentence and decide whether it answers the question.\n"
       "Sentence: {sentence}\nQuestion: {question}", "{label}"),
     T('Is the answer to "{question}" found in the following text?\n{sentence}', "{label}")),
    label_field="label", verbalizers=("yes", "no"),
)

SUPERGLUE_BOOLQ = TaskTemplates(
    "superglue_boolq",
    (T("{passage}\n\nBased on the passage, {question}?", "{label}"),
     T("Read the text and answer the yes/no question.\nText: {passage}\nQuestion: {question}?",
       "{label}"),
     T("Passage: {passage}\nQ: {question}?\nA:", "{label}"),
     T("Question: {question}?\nUse this passage to answer: {passage}", "{label}"),
     T("{passage}\nAccording to the passage above, is it true that {question}?", "{label}")),
    label_field="label", verbalizers=("no", "yes"),
)

SUPERGLUE_CB = TaskTemplates(
    "superglue_cb",
    (T("Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
       "{label}"),
     T('{premise}\n\nGiven the text above, is it true that "{hypothesis}"?', "{label}"),
     T("Read the following and decide whether the last statement follows.\n{premise}\n"
       "Statement: {hypothesis}", "{label}"),
     T('Suppose that {premise} Can we infer that "{hypothesis}"?', "{label}"),
     T("Text: {premise}\nClaim: {hypothesis}\nIs the claim supported by the text, "
       "contradicted by it, or neither?", "{label}")),
    label_field="label", verbalizers=("yes", "no", "maybe"),
)

SUPERGLUE_RTE = TaskTemplates(
    "superglue_rte",
    (T('{premise}\n\nDoes this mean that "{hypothesis}" is true?', "{label}"),
     T("Premise: {premise}\nHypothesis: {hypothesis}\nIs the hypothesis entailed by the "
       "premise?", "{label}"),
     T('Given that "{premise}", does it follow that "{hypothesis}"?', "{label}"),
     T("Read the passage and decide whether the statement is implied.\n"
       "Passage: {premise}\nStatement: {hypothesis}", "{label}"),
     T("Can we conclude the following? {hypothesis}\n\n{premise}", "{label}")),
    label_field="label", verbalizers=("yes", "no"),
)

SQUAD_V1_1 = TaskTemplates(
    "squad_v1_1",
    (T("{context}\n\nAnswer this question using the passage above: {question}", "{answer}"),
     T("Read the passage about {title} and answer the question.\n{context}\n"
       "Question: {question}", "{answer}"),
     T("Question: {question}\nContext: {context}\nAnswer:", "{answer}"),
     T('Extract the answer to "{question}" from this text: {context}', "{answer}"),
     T("{title}\n{context}\nQ: {question}\nA:", "{answer}")),
    inverse_templates=(
        T('Write a question about the passage whose answer is "{answer}".\n{context}',
          "{question}"),
        T("{context}\n\nAsk a question that this passage answers with: {answer}", "{question}"),
        T("Passage: {context}\nAnswer: {answer}\nQuestion:", "{question}"),
        T("Here is a text and an answer taken from it. What was the question?\n"
          "Text: {context}\nAnswer: {answer}", "{question}"),
        T('Pose a reading-comprehension question about {title} answered by "{answer}".\n'
          "{context}", "{question}")),
    inverse_metrics=(metrics.rouge,),
)

MULTI30K_EN_DE = TaskTemplates(
    "multi30k_en_de",
    (T("Translate to German: {en}", "{de}"),
     T("{en}\n\nHow would you say this in German?", "{de}"),
     T("English: {en}\nGerman:", "{de}"),
     T("Give a German translation of this image caption: {en}", "{de}"),
     T("Render the following English sentence in German.\n{en}", "{de}")),
    inverse_templates=(
        T("Translate to English: {de}", "{en}"),
        T("{de}\n\nWhat does this German sentence say in English?", "{en}"),
        T("German: {de}\nEnglish:", "{en}"),
        T("Give an English translation of this image caption: {de}", "{en}"),
        T("Render the following German sentence in English.\n{de}", "{en}")),
    inverse_metrics=(metrics.bleu,),
)

DIALOGSUM = TaskTemplates(
    "dialogsum",
    (T("Summarize this conversation:\n{dialogue}", "{summary}"),
     T("{dialogue}\n\nWhat are the main points of the dialogue above?", "{summary}"),
     T("Dialogue:\n{dialogue}\nWrite a short summary:", "{summary}"),
     T("Briefly describe what happens in the following exchange.\n{dialogue}", "{summary}"),
     T("Here is a chat between two people.\n{dialogue}\nSum it up in a sentence or two.",
       "{summary}")),
)

REAL_TABLES = (GLUE_SST2, GLUE_COLA, GLUE_STSB, GLUE_QNLI, SUPERGLUE_BOOLQ, SUPERGLUE_CB,
               SUPERGLUE_RTE, SQUAD_V1_1, MULTI30K_EN_DE, DIALOGSUM)

# ---------------------------------------------------------------- synthetic suite

# Built around the task's own instruction (e.g. "Add the numbers:").
SYNTHETIC_TEMPLATES = (
    T("{instruction} {query}", "{answer}"),
    T("{query}\n\n{instruction}", "{answer}"),
    T("Instruction: {instruction}\nInput: {query}\nOutput:", "{answer}"),
    T("{instruction}\n{query}", "{answer}"),
    T("Input: {query}\nTask: {instruction}\nAnswer:", "{answer}"),
)

SYNTHETIC_COT_TEMPLATES = (
    T("{instruction} {query}\nWork it out step by step.", "{rationale}. Answer: {answer}"),
    T("{query}\n\n{instruction} Show the steps first.", "{rationale}. Answer: {answer}"),
    T("Instruction: {instruction}\nInput: {query}\nExplain, then answer.",
      "{rationale}. Answer: {answer}"),
    T("{instruction} {query}\nGive your reasoning and then the answer.",
      "{rationale}. Answer: {answer}"),
)

# Tasks whose input follows from their output: the inverse instruction.
SYNTHETIC_INVERSES = {
    "uppercase": "Write it in small letters:",
    "double_letters": "Keep one of each doubled letter:",
    "rotate_left": "Move the last letter to the front:",
    "add_one": "Subtract one from the number:",
    "count_up": "Give the first and the last number:",
}

_INVERSE_FRAMES = ("{inv} {{answer}}", "{{answer}}\n\n{inv}",
                   "Instruction: {inv}\nInput: {{answer}}\nOutput:")


def synthetic_table(task: synthetic.SyntheticTask, seed: int = 0) -> TaskTemplates:
    inverse = SYNTHETIC_INVERSES.get(task.name)
    return TaskTemplates(
        task.task_name, SYNTHETIC_TEMPLATES,
        label_field="answer" if task.labels else "",
        cot_templates=SYNTHETIC_COT_TEMPLATES if task.explain else (),
        cot_source=(functools.partial(synthetic.base.source, task, seed, True)
                    if task.explain else None),
        inverse_templates=tuple(T(f.format(inv=inverse), "{query}") for f in _INVERSE_FRAMES)
        if inverse else (),
        inverse_metrics=(metrics.exact_match,) if inverse else (),
    )


def tables() -> dict[str, TaskTemplates]:
    """Every template table, by base task name."""
    out = {t.task: t for t in REAL_TABLES}
    out.update({t.task_name: synthetic_table(t) for t in synthetic.TASKS})
    return out


def get(task: str) -> TaskTemplates:
    """The template table of a base task: its hand-written one, else one
    generated from its fields and label names (`generic_table`)."""
    from t5mtl.data.task_info import has_task_info
    found = tables().get(task)
    if found is not None:
        return found
    if not has_task_info(task):
        import difflib
        close = difflib.get_close_matches(task, list(tables()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise T5mtlError(f"no instruction templates for task {task!r} (no such task){hint}")
    return generic_table(task)


# ---------------------------------------------------------------- any other task

GENERIC_TEMPLATE_COUNT = 5


def _title(field: str) -> str:
    return field.replace("_", " ").strip().capitalize()


def task_fields(task: str) -> tuple[tuple[str, ...], str]:
    """(input fields, answer field) of a registered task: the slots of its
    file template (inputs, then the one targets slot), else its TaskInfo's
    fields with "label"/"answer"/"target" as the answer."""
    import seqio

    from t5mtl.data import files
    from t5mtl.data.task_info import get_task_info
    info = get_task_info(task)
    template = (files.task_template(seqio.TaskRegistry.get(task))
                if task in seqio.TaskRegistry.names() else None)
    if template is not None:
        targets = [n for _, n in files._parse(template.targets) if n]
        inputs = template.input_fields()
        if len(targets) == 1 and inputs:
            return inputs, targets[0]
    answer = next((f for f in ("label", "answer", "target", "targets") if f in info.fields), "")
    inputs = tuple(f for f in info.fields if f != answer)
    if not answer or not inputs:
        raise T5mtlError(
            f"no instruction templates for task {task!r}: it has no hand-written table and "
            f"its fields {list(info.fields)} do not say which one is the answer (register it "
            f"with a Template whose targets are one field, or pass a TaskTemplates)")
    return inputs, answer


def generic_table(task: str) -> TaskTemplates:
    """Templates generated from a task's fields and label names, for tasks
    without a hand-written table (a user's own tasks): zero-shot, few-shot
    and (classification) options variants; the answers are the label names."""
    from t5mtl.data.task_info import get_task_info
    info = get_task_info(task)
    inputs, answer = task_fields(task)
    block = "\n".join(f"{_title(f)}: {{{f}}}" for f in inputs)
    flat = " ".join(f"{f}: {{{f}}}" for f in inputs)
    names = " and ".join(_title(f).lower() for f in inputs)
    what = _title(answer).lower()
    about = (info.description or info.instruction).replace("{", "{{").replace("}", "}}")
    target = f"{{{answer}}}"
    table = (
        T(f"{block}\n{_title(answer)}:", target),
        T(f"Read the {names} below, then give the {what}.\n{block}", target),
        T(f"{info.name} {flat}", target),
        T(f"{block}\n\nWhat is the {what}?", target),
        T(f"{about or 'Task: ' + info.name}\n{block}", target),
    )
    assert len(table) == GENERIC_TEMPLATE_COUNT
    return TaskTemplates(task, table, label_field=answer if info.label_names else "")
