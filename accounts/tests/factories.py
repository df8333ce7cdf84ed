import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill

PASSWORD = "correct horse battery staple"


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("code",)

    name = factory.Sequence(lambda n: f"Main Street Clinic {n}")
    code = factory.Sequence(lambda n: f"site-{n}")
    time_zone = "America/New_York"


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Department: team {n}")


class DepartmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Department

    site = factory.SubFactory(SiteFactory)
    name = factory.Sequence(lambda n: f"Team {n}")
    code = factory.Sequence(lambda n: f"team-{n}")
    group = factory.SubFactory(GroupFactory, name=factory.SelfAttribute("..name"))


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@clinic.example")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        """`UserFactory(roles=["Agent"])` puts the user in those role groups."""
        if create and extracted:
            self.groups.add(*(Group.objects.get(name=name) for name in extracted))
        if create:
            self.save()


class StaffProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StaffProfile
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    capacity = 5
    availability = StaffProfile.Availability.AVAILABLE
    time_zone = "America/New_York"

    @factory.post_generation
    def departments(self, create, extracted, **kwargs):
        """`StaffProfileFactory(departments=[billing])` makes the person a member."""
        if create and extracted:
            self.user.groups.add(*(department.group for department in extracted))


class SkillFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Skill
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"skill-{n}")
    name = factory.LazyAttribute(lambda s: s.code.replace("-", " ").title())


class StaffSkillFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StaffSkill

    staff = factory.SubFactory(StaffProfileFactory)
    skill = factory.SubFactory(SkillFactory)
    level = 3
