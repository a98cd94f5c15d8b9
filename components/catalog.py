"""The built-in component catalog: importing this module registers every built-in component.

The registry imports it once, lazily, on the first lookup. Add a new component module here.
"""

# Each import runs that module's @register decorators.
import audiostyle.components.autoregressive_decoder  # noqa: F401
import audiostyle.components.content_encoder  # noqa: F401
import audiostyle.components.discriminator  # noqa: F401
import audiostyle.components.frame_conv_encoders  # noqa: F401
import audiostyle.components.frontend  # noqa: F401
import audiostyle.components.log_stft_frontend  # noqa: F401
import audiostyle.components.losses  # noqa: F401
import audiostyle.components.parallel_decoder  # noqa: F401
import audiostyle.components.spectral_decoder  # noqa: F401
import audiostyle.components.spectral_whitening  # noqa: F401
import audiostyle.components.style_encoder  # noqa: F401
