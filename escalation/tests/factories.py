import factory

from escalation.models import BusinessCalendar, CalendarClosure, EscalationStep, SlaPolicy

WEEKDAYS_NINE_TO_FIVE = {str(day): [["09:00", "17:00"]] for day in range(5)}


class BusinessCalendarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BusinessCalendar

    name = factory.Sequence(lambda n: f"Clinic hours {n}")
    time_zone = "America/New_York"
    hours = factory.LazyFunction(lambda: dict(WEEKDAYS_NINE_TO_FIVE))


class CalendarClosureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CalendarClosure

    calendar = factory.SubFactory(BusinessCalendarFactory)
    reason = "Staff training"


class SlaPolicyFactory(factory.django.DjangoModelFactory):
    """Around the clock unless given a calendar; matches every task unless narrowed."""

    class Meta:
        model = SlaPolicy
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Policy {n}")
    order = factory.Sequence(lambda n: n)
    first_claim_minutes = 60
    resolution_minutes = 240
    calendar = None

    @factory.post_generation
    def task_types(self, create, extracted, **kwargs):
        if create and extracted:
            self.task_types.set(extracted)

    @factory.post_generation
    def queues(self, create, extracted, **kwargs):
        if create and extracted:
            self.queues.set(extracted)


class EscalationStepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EscalationStep

    policy = factory.SubFactory(SlaPolicyFactory)
    level = factory.Sequence(lambda n: n + 1)
    target = EscalationStep.Target.FIRST_CLAIM
    when = EscalationStep.When.PERCENT
    percent = 100
    action = EscalationStep.Action.MARK_AT_RISK
