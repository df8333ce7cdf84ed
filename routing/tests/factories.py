import factory

from queues.models import Queue
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing.models import ClassificationRule, RoutingRule, RuleSet


class RuleSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RuleSet

    name = "Clinic rules"
    version = factory.Sequence(lambda n: n + 1)
    status = RuleSet.Status.ACTIVE
    review_queue = factory.SubFactory(
        QueueFactory, name="Needs review", kind=Queue.Kind.REVIEW, assignment_policy="pull_only"
    )
    red_flag_queue = factory.SubFactory(QueueFactory, name="Clinical triage")
    red_flag_task_type = factory.SubFactory(
        TaskTypeFactory,
        code="clinical_triage",
        default_queue=factory.SelfAttribute("..red_flag_queue"),
    )
    red_flag_phrases = "chest pain\nshortness of breath\nsuicidal"


class ClassificationRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClassificationRule

    rule_set = factory.SubFactory(RuleSetFactory)
    name = factory.Sequence(lambda n: f"Classification rule {n}")
    order = factory.Sequence(lambda n: (n + 1) * 10)


class RoutingRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingRule
        skip_postgeneration_save = True

    rule_set = factory.SubFactory(RuleSetFactory)
    name = factory.Sequence(lambda n: f"Routing rule {n}")
    order = factory.Sequence(lambda n: (n + 1) * 10)
    target_queue = factory.SubFactory(QueueFactory)

    @factory.post_generation
    def task_types(self, create, extracted, **kwargs):
        if create and extracted:
            self.task_types.set(extracted)

    @factory.post_generation
    def sites(self, create, extracted, **kwargs):
        if create and extracted:
            self.sites.set(extracted)
