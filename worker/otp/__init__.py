"""OTP / 2FA codes (docs/otp.md): codes and their keys (`codes`), the text the worker sends
(`content`), challenges and checks (`challenges`), destinations and send limits (`policy`),
and the scheduled resend (`resend`). The producer side is `producer.otp`."""
