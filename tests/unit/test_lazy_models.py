"""aiogram imported through `import_aiogram()` builds its models on first use, and all of them work.

Each check runs in a fresh interpreter: in this one aiogram is already imported (eagerly).
"""

from __future__ import annotations

from tests.harness import run_fresh_python


def test_models_are_not_built_at_import_and_build_on_first_use() -> None:
    out = run_fresh_python(
        """
        from bot.telegram.lazy_models import import_aiogram
        assert import_aiogram() is True
        assert import_aiogram() is False
        from aiogram import types
        assert not types.Message.__pydantic_complete__
        update = types.Update.model_validate({
            "update_id": 7,
            "message": {
                "message_id": 1, "date": 0, "text": "hi",
                "chat": {"id": 5, "type": "private"},
                "from": {"id": 5, "is_bot": False, "first_name": "Ann"},
                "photo": [{"file_id": "f", "file_unique_id": "u", "width": 2, "height": 3}],
                "reply_to_message": {"message_id": 0, "date": 0, "chat": {"id": 5, "type": "private"}},
            },
        })
        message = update.message
        print(message.from_user.first_name, message.photo[0].height, message.reply_to_message.chat.id)
        """
    )
    assert out.split() == ["Ann", "3", "5"]


def test_every_type_and_method_model_builds_with_its_namespace() -> None:
    out = run_fresh_python(
        """
        from pydantic import BaseModel
        from bot.telegram.lazy_models import import_aiogram
        import_aiogram()
        from aiogram import methods, types
        built = 0
        for module in (types, methods):
            for name in module.__all__:
                model = getattr(module, name)
                if isinstance(model, type) and issubclass(model, BaseModel):
                    assert model.model_rebuild(raise_errors=True) in (True, None), name
                    assert model.__pydantic_complete__, name
                    built += 1
        print(built)
        """
    )
    assert int(out) > 500


def test_methods_and_responses_resolve_nested_types() -> None:
    out = run_fresh_python(
        """
        from bot.telegram.lazy_models import import_aiogram
        import_aiogram()
        from aiogram import methods, types
        from aiogram.methods.base import Response
        send = methods.SendMessage(
            chat_id=1,
            text="x",
            entities=[types.MessageEntity(type="bold", offset=0, length=1)],
            reply_markup=types.InlineKeyboardMarkup(
                inline_keyboard=[[types.InlineKeyboardButton(text="a", callback_data="b")]]
            ),
        )
        sent = Response[types.Message].model_validate({
            "ok": True,
            "result": {"message_id": 9, "date": 0, "chat": {"id": 1, "type": "private"},
                       "entities": [{"type": "bold", "offset": 0, "length": 1}]},
        })
        print(send.entities[0].type, send.reply_markup.inline_keyboard[0][0].text,
              sent.result.message_id, sent.result.entities[0].length)
        """
    )
    assert out.split() == ["bold", "a", "9", "1"]


def test_image_libraries_are_not_imported_at_start_up() -> None:
    out = run_fresh_python(
        """
        import sys
        from bot.telegram.lazy_models import import_aiogram
        import_aiogram()
        import bot.app
        print("google.genai" in sys.modules, "PIL" in sys.modules, "aiogram" in sys.modules)
        """
    )
    assert out.split() == ["False", "False", "True"]


def test_the_models_every_turn_needs_are_built_at_start_up() -> None:
    out = run_fresh_python(
        """
        from bot.telegram.lazy_models import import_aiogram
        import_aiogram()
        from aiogram import methods, types
        from bot.telegram.response_models import USED_METHODS, pin_response_models
        assert not types.Update.__pydantic_complete__
        pinned = pin_response_models()
        needed = [types.Update, types.Message, *USED_METHODS, *pinned]
        print(len(pinned), all(model.__pydantic_complete__ for model in needed))
        """
    )
    assert out.split() == ["9", "True"]
